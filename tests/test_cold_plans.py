"""Plans that hold on a fresh database: before PostgreSQL has statistics (a new install, a
tenant's first import; this machine's autovacuum is off), the create and the get of one contact
read one contact row, not the Space's every contact. Prepared statements get generic plans, as
the app's do once they have run a few times (here forced)."""

import asyncio
import re
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from alembic import command

from contactbase.contacts.custom_fields import SLOTS
from contactbase.contacts.reads import WHOLE_CONTACT
from contactbase.contacts.statements import NEW_CONTACT
from contactbase.db import async_url
from contactbase.migrations import migrations_config
from tests.conftest import _reset_postgres

CONTACTS = 300
# An index scan of `contacts`, and the rows it returned.
SCAN = re.compile(r"Index Scan using \w+ on contacts.*actual time=\S+ rows=(\d+)")


def create(n: int) -> dict[str, Any]:
    params: dict[str, Any] = {"space_id": 1, "now": datetime(2026, 11, 30)}
    params |= {"email": f"p{n}@example.com", "phone": None, "name": None, "location": None}
    params |= dict.fromkeys(SLOTS)
    for kind in ("emails", "phones", "names", "locations"):
        values = [f"p{n}@example.com"] if kind == "emails" else []
        params |= {f"{kind}_positions": list(range(len(values))), f"{kind}_values": values}
        params[f"{kind}_normalised"] = values
    return params


async def explained(connection: Any, prepared: Any, params: dict[str, Any]) -> str:
    statement = await connection.prepare("EXPLAIN (ANALYZE) " + prepared.sql)
    rows = await statement.fetch(*(params[name] for name in prepared.names))
    return "\n".join(row[0] for row in rows)


async def test_a_create_and_a_get_read_one_contact_without_statistics(
    database_url: str, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("PostgreSQL's planner (SQLite's is held by bench/cold.py's figures)")
    url = database_url.rsplit("/", 1)[0] + "/contactbase_cold_plans"
    await _reset_postgres(url)
    await asyncio.to_thread(command.upgrade, migrations_config(url), "head")
    parsed = async_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database=parsed.database
    )
    try:
        await connection.execute(
            "INSERT INTO spaces (name, status, timezone, rate_limits, created_at)"
            " VALUES ('cold', 'active', 'UTC', '{}', now())"
        )
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'contacts'")
            == 0
        )
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        for n in range(CONTACTS):
            await connection.fetch(NEW_CONTACT.sql, *(create(n)[k] for k in NEW_CONTACT.names))
        plans = {
            "get": await explained(
                connection, WHOLE_CONTACT, {"space_id": 1, "contact_id": CONTACTS - 1}
            ),
            "create": await explained(connection, NEW_CONTACT, create(CONTACTS)),
            "re-sent": await explained(connection, NEW_CONTACT, create(CONTACTS - 2)),
        }
    finally:
        await connection.close()
    for name, plan in plans.items():
        scanned = [int(rows) for rows in SCAN.findall(plan)]
        assert scanned, plan
        assert max(scanned) <= 1, f"{name}:\n{plan}"
        assert "Rows Removed by Join Filter" not in plan, f"{name}:\n{plan}"
