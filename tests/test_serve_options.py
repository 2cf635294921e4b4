"""`contactbase serve` behind a proxy (issue 16, finding 3): --root-path and
--forwarded-allow-ips, and a warning at start when links would follow the Host header."""

from pathlib import Path

import httpx

from tests.test_headers import contactbase, contactbase_serve

WARNING = "warning: CONTACTBASE_PUBLIC_URL is not set"


def key_for(env: dict[str, str]) -> dict[str, str]:
    space = contactbase(env, "space", "create", "Acme")
    key = contactbase(env, "key", "create", str(space["id"]))["key"]
    return {"Authorization": f"Bearer {key}"}


def listed_path(port: int, auth: dict[str, str], **headers: str) -> str:
    response = httpx.get(
        f"http://127.0.0.1:{port}/public-api/v1/contacts", headers={**auth, **headers}
    )
    assert response.status_code == 200, response.text
    path: str = response.json()["path"]
    return path


def test_a_public_host_without_a_public_url_is_warned_of(tmp_path: Path) -> None:
    with contactbase_serve(tmp_path, "--host", "0.0.0.0"):
        pass
    assert WARNING in (tmp_path / "serve.log").read_text()


def test_loopback_is_not_warned_of(tmp_path: Path) -> None:
    with contactbase_serve(tmp_path):
        pass
    assert WARNING not in (tmp_path / "serve.log").read_text()


def test_root_path_and_trusted_proxies(tmp_path: Path) -> None:
    with contactbase_serve(tmp_path, "--root-path", "/crm") as served:
        auth = key_for(served.env)
        base = f"127.0.0.1:{served.port}"
        assert listed_path(served.port, auth) == f"http://{base}/crm/public-api/v1/contacts"
        # 127.0.0.1 is trusted by default: the proxy's scheme is believed.
        proto = listed_path(served.port, auth, **{"X-Forwarded-Proto": "https"})
        assert proto == f"https://{base}/crm/public-api/v1/contacts"
    with contactbase_serve(tmp_path / "strict", "--forwarded-allow-ips", "10.9.9.9") as served:
        auth = key_for(served.env)
        base = f"127.0.0.1:{served.port}"
        ignored = listed_path(served.port, auth, **{"X-Forwarded-Proto": "https"})
        assert ignored == f"http://{base}/public-api/v1/contacts"
