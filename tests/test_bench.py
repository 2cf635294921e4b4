"""The benchmarks' own parts run (their figures are for `make bench`, never asserted here): the
plain-sqlite3 ceilings of bench/embedded.py on a migrated file, the pgbench scripts of
bench/run.py built from the app's statements, a few events through bench/webhooks.py, and
bench/filters.py's and bench/list_memory.py's scenarios at tiny sizes."""

import asyncio
import importlib
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from contactbase.db import Database

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import batch  # noqa: E402
import embedded  # noqa: E402
import floor  # noqa: E402
import run  # noqa: E402
from database import fresh_database  # noqa: E402
from harness import make_key  # noqa: E402

webhooks = importlib.import_module("webhooks")  # bench/webhooks.py, not contactbase's package
bench_filters = importlib.import_module("filters")  # bench/filters.py (mypy does not see bench/)
list_memory = importlib.import_module("list_memory")  # likewise bench/list_memory.py


def test_the_sqlite_ceilings_run(tmp_path: Path) -> None:
    path = tmp_path / "bench.db"
    url = f"sqlite:///{path}"
    fresh_database(url)
    asyncio.run(make_key(url))
    first, last = embedded.seed(path, 1, 50)
    assert last - first == 49
    assert embedded.create_ceiling(path, 1, 0.2, group=4) > 0
    assert embedded.create_ceiling(path, 1, 0.2) > 0
    assert embedded.get_ceiling(path, 1, (first, last), 0.2) > 0


def test_the_pgbench_scripts_hold_the_apps_statements(tmp_path: Path) -> None:
    run.ceiling_scripts(7, 1, 50, tmp_path)
    create = (tmp_path / "create.sql").read_text()
    get = (tmp_path / "get.sql").read_text()
    assert create.startswith("\\set space 7\n")
    assert "INSERT INTO contacts" in create
    assert "$" not in create  # every parameter given: a variable, a constant or an ARRAY[...]
    assert "random(1, 50)" in get
    assert "api_keys" not in create + get  # the key is cached: not the database's work


async def test_the_floor_app_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/floor.py's bare app is built as uvicorn builds it, and serves its health check."""
    monkeypatch.setenv("FLOOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    monkeypatch.setenv("FLOOR_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("FLOOR_SPACE_ID", "1")
    transport = httpx.ASGITransport(app=floor.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_the_batch_bodies_and_the_copy_ceiling_run(
    database_url: str, is_postgres: bool, db: Database
) -> None:
    """bench/batch.py's bodies are batches the API accepts whole, and its COPY ceiling loads
    the rows the app writes (on PostgreSQL, into the Space made first: id 1)."""
    import orjson

    from contactbase.contacts.batch_schemas import read_batch
    from contactbase.contacts.schemas import ContactCreate

    for body in batch.bodies("t", 2) + batch.bodies("u", 1, seeded=600):
        items = read_batch(body)
        assert len(items) == batch.BATCH
        assert all(isinstance(item, ContactCreate) for item in items)
        assert len(orjson.loads(body)["contacts"]) == batch.BATCH
    if is_postgres:
        await make_key(database_url)
        ceiling = await asyncio.to_thread(batch.copy_ceiling, database_url, 1, "ceiling", 2, 2)
        assert ceiling > 0


def test_the_webhook_throughput_runs(database_url: str, is_postgres: bool, redis_url: str) -> None:
    """bench/webhooks.py, a few events on a database of its own beside the test database,
    reports a rate for one endpoint and for four."""
    if not is_postgres:
        pytest.skip("bench/webhooks.py serves PostgreSQL")
    figures = webhooks.scenarios(20, 1, database_url + "_bench_webhooks", redis_url)
    assert figures["endpoints_1"]["events_per_s"] > 0
    assert figures["endpoints_4"]["messages_per_s"] > 0


def test_the_filtered_list_runs(database_url: str, is_postgres: bool, redis_url: str) -> None:
    """bench/filters.py's filtered list, over 400 contacts on a database of its own: pages
    followed before and after ANALYZE, each time with the plan of the app's statement."""
    if not is_postgres:
        pytest.skip("bench/filters.py serves PostgreSQL")
    url = database_url + "_bench_filters"
    figures = bench_filters.filtered_list(400, 1, 2, (50,), url, redis_url)
    assert 0 < figures["analysed"]["plan"]["matching"] < 400
    for stage in ("not_analysed", "analysed"):
        assert figures[stage]["per_page_50"]["rows_per_s"] > 0
        assert figures[stage]["plan"]["plan_mode"] in ("generic", "custom")
        assert any("Limit" in line for line in figures[stage]["plan"]["plan"])


def test_the_create_with_and_without_slot_indexes_runs(
    database_url: str, is_postgres: bool, redis_url: str
) -> None:
    """bench/filters.py's creates setting custom fields, a round with the slot indexes and one
    without, on a database of its own."""
    if not is_postgres:
        pytest.skip("bench/filters.py serves PostgreSQL")
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (`make bench` installs it)")
    url = database_url + "_bench_filter_indexes"
    figures = bench_filters.filter_indexes_create(wrk, 1, 1, 4, url, redis_url)
    assert figures["with_indexes"]["rps"] > 0
    assert figures["without_indexes"]["rps"] > 0
    assert figures["ratio"] > 0


def test_the_list_memory_runs(
    database_url: str, is_postgres: bool, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/list_memory.py, two slow readers of 20 contacts with full text slots, the page
    capped at 1 MiB, on a database of its own: pages within the cap, the worker's peak."""
    if not is_postgres:
        pytest.skip("bench/list_memory.py serves PostgreSQL")
    monkeypatch.delenv(list_memory.CAP, raising=False)  # run() sets it: restored after
    url = database_url + "_bench_list_memory"
    figures = list_memory.run(url, redis_url, 20, 2, 0.0, [2**20])[2**20]
    assert 0 < max(figures["answer_bytes"]) <= 2**20
    assert figures["all_have_next_cursor"]
    assert figures["peak_mb"] >= figures["idle_mb"] > 0
