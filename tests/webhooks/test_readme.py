"""The README's receiver, run as written against a message this service delivered."""

import re
from pathlib import Path

import httpx
import pytest

from contactbase.db import Database
from contactbase.webhooks.worker import WebhookWorker
from tests.factories import add_contact, bearer, make_endpoint, make_key, make_space
from tests.webhooks.receivers import Receiver, settle

README = Path(__file__).parents[2] / "README.md"


def readme_receiver() -> str:
    """The README's Python block that verifies a webhook."""
    text = README.read_text()
    section = text[text.index("## Receive every change as it happens") :]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return block.group(1)


async def test_the_readme_receiver_verifies_a_delivered_message(
    client: httpx.AsyncClient,
    db: Database,
    worker: WebhookWorker,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    _endpoint_id, secret = await make_endpoint(db, space_id, receiver.url())
    created = await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await settle(worker)
    (message,) = receiver.at("/hook")

    code = readme_receiver()
    assert '"whsec_…"' in code
    namespace: dict[str, object] = {}
    exec(code.replace('"whsec_…"', repr(secret)), namespace)
    receive = namespace["receive"]
    assert callable(receive)
    capsys.readouterr()
    receive(message.body, message.headers)
    assert capsys.readouterr().out == f"contact.created {created['id']} 1\n"

    forged = message.body.replace(b"contact.created", b"contact.erased")
    with pytest.raises(Exception, match="No matching signature"):
        receive(forged, message.headers)
