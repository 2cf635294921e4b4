"""Source trees ("variants") side by side under wrk: CPU per request and throughput.

A variant is LABEL=TREE[:NAME=VALUE,...]: the server runs with TREE/src first on PYTHONPATH and
those environment variables (and no other CONTACTBASE_ one). For each database (PostgreSQL with
the Redis limiter and 2 workers; SQLite with 1 worker and no Redis) it prepares one fresh,
migrated database seeded with 10,000 contacts, then runs alternating rounds: in each, every
variant in turn (the order reversed every other round) gets a fresh server and a create and a get
run (2 s warm-up, then SECONDS), measured as bench/run.py does (the workers' CPU from /proc).
Prints the medians and each variant's ratio to the first; writes --output (a JSON file).

    python bench/compare.py --variant lane=/work/before \\
        --variant nolane=/work/before:CONTACTBASE_NO_EXPRESS=1 --rounds 5

The first variant's tree also prepares the databases (its contactbase and migrations) and lends
its bench/harness.py and bench/database.py (wrk, wrk.lua, fresh_database): a tree that is being
refactored is only ever run as a server.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procs import wait_until_healthy, workers_of

BENCH = Path(__file__).resolve().parent
SCENARIOS = ("create", "get")
SEEDED = 10_000
CHECK = (
    "import contactbase, contactbase.app as a; print(contactbase.__file__);"
    " print(type(a.create_app().build_middleware_stack()).__name__)"
)


@dataclass(frozen=True)
class Variant:
    label: str
    tree: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        label, _, rest = text.partition("=")
        tree, *pairs = rest.split(":")
        env = dict(pair.split("=", 1) for item in pairs for pair in item.split(","))
        if not label or not (Path(tree) / "src" / "contactbase").is_dir():
            raise argparse.ArgumentTypeError(f"not LABEL=TREE[:NAME=VALUE,...]: {text!r}")
        return cls(label, Path(tree).resolve(), env)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    workers: int
    redis_url: str | None


async def prepare(url: str) -> tuple[str, int, int]:
    """In a fresh database: a "bench" Space (limits out of the way) and SEEDED contacts (bulk
    SQL, in the database's only Space); returns its key and the first and last seeded ids."""
    # Imported here: main() has put the first variant's src and bench on sys.path by now.
    from sqlalchemy import DateTime, bindparam, text

    from contactbase.db import Database
    from contactbase.ratelimit import ENDPOINTS
    from contactbase.spaces import service

    db = Database(url, pool_size=1)
    async with db.writer() as session, session.begin():
        space = await service.create_space(session, "bench")
        for endpoint in ENDPOINTS:
            await service.set_limit(session, space.id, endpoint, 1_000_000_000)
        _key, raw_key = await service.create_key(session, space.id, "bench")
        # A recursive CTE rather than generate_series, which SQLite lacks.
        insert = text(
            "INSERT INTO contacts (space_id, email, name, phone, location, created_at, updated_at)"
            " WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :count)"
            " SELECT :space, 'seed' || n || '@example.com', 'Seed ' || n, '+1234567890',"
            " 'New York, NY', :now, :now FROM g"
        ).bindparams(bindparam("now", type_=DateTime()))
        params = {"count": SEEDED, "space": space.id, "now": datetime.now(UTC).replace(tzinfo=None)}
        await session.execute(insert, params)
        emails = "INSERT INTO contact_emails (space_id, contact_id, position, value, normalised)"
        await session.execute(text(f"{emails} SELECT space_id, id, 0, email, email FROM contacts"))
        first, last = (await session.execute(text("SELECT min(id), max(id) FROM contacts"))).one()
        await session.execute(text("ANALYZE"))
    await db.dispose()
    return raw_key, int(first), int(last)


def server_env(variant: Variant, target: Target, workdir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONTACTBASE_")}
    env.update(
        PYTHONPATH=str(variant.tree / "src"),
        CONTACTBASE_DATABASE_URL=target.url,
        CONTACTBASE_EXPORT_POLL_SECONDS="5",
        CONTACTBASE_EXPORT_DIR=str(workdir / "exports"),
    )
    if target.redis_url:
        env["CONTACTBASE_REDIS_URL"] = target.redis_url
    return {**env, **variant.env}


def check(variant: Variant, target: Target, workdir: Path) -> str:
    """Which contactbase the variant's server imports, and its app's outermost layer."""
    env = server_env(variant, target, workdir)
    out = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, cwd=workdir, check=True, capture_output=True
    )
    module, outermost = out.stdout.decode().split()
    if not Path(module).is_relative_to(variant.tree / "src"):
        raise RuntimeError(f"{variant.label} imports {module}, not {variant.tree}/src")
    return f"{variant.label}: {module} [{outermost}]"


def start_server(
    variant: Variant, target: Target, port: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """`contactbase serve` of the variant's tree, as bench/harness.start_server runs it (every
    setting at its default, the access log on, written to a file of the run), answering when
    this returns."""
    command = [sys.executable, "-m", "contactbase", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(target.workers)]
    log = (workdir / "server.log").open("ab")
    server = subprocess.Popen(
        command, env=server_env(variant, target, workdir), cwd=workdir, stdout=log, stderr=log
    )
    log.close()
    wait_until_healthy(server, port)
    return server


def scenario(
    wrk_path: str, port: int, workers: list[int], args: list[str], seconds: int, connections: int
) -> dict[str, float]:
    """bench/run.py's scenario (harness.scenario: a 2 s warm-up with other emails, then the
    measured run), with the machine's load as it ends (the bench alone makes about 3-4)."""
    from harness import scenario as measured

    figures = measured(wrk_path, port, workers, args, seconds, connections)
    return {**figures, "load_1m": round(os.getloadavg()[0], 2)}


def run_target(
    target: Target, variants: list[Variant], args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    from database import fresh_database
    from harness import ensure_wrk, free_port

    wrk_path = ensure_wrk()
    for variant in variants:
        print(f"compare: {target.name}: {check(variant, target, workdir)}", flush=True)
    print(f"compare: {target.name}: preparing the database ...", flush=True)
    fresh_database(target.url)
    key, first, last = asyncio.run(prepare(target.url))
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        for variant in variants if number % 2 else variants[::-1]:
            port = free_port()
            server = start_server(variant, target, port, workdir)
            try:
                workers = workers_of(server.pid)
                for mode in SCENARIOS:
                    wrk_args = [mode, key, uuid.uuid4().hex[:8], str(SEEDED), str(first), str(last)]
                    figures = scenario(
                        wrk_path, port, workers, wrk_args, args.seconds, args.connections
                    )
                    where = dict(database=target.name, round=number, variant=variant.label)
                    rounds.append({**where, "scenario": mode, **figures})
                    print(f"compare: {rounds[-1]}", flush=True)
            finally:
                server.terminate()
                server.wait(20)
    return rounds


def summarise(rounds: list[dict[str, Any]], variants: list[Variant]) -> list[dict[str, Any]]:
    """Per database, scenario and variant: the medians over the rounds, their ratios to the first
    variant's, and the median of the rounds' own CPU ratios (paired within each round, so less
    moved by a load on the machine that drifts from round to round)."""
    runs: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for run in rounds:
        runs.setdefault((run["database"], run["scenario"], run["variant"]), {})[run["round"]] = run
    rows: list[dict[str, Any]] = []
    for database in dict.fromkeys(run["database"] for run in rounds):
        for mode in SCENARIOS:
            base = runs[database, mode, variants[0].label]
            base_cpu = statistics.median(run["cpu_s_per_1000"] for run in base.values())
            base_rps = statistics.median(run["rps"] for run in base.values())
            for variant in variants:
                group = runs[database, mode, variant.label]
                cpu = statistics.median(run["cpu_s_per_1000"] for run in group.values())
                rps = statistics.median(run["rps"] for run in group.values())
                paired = statistics.median(
                    run["cpu_s_per_1000"] / base[number]["cpu_s_per_1000"]
                    for number, run in group.items()
                )
                rows.append(
                    dict(database=database, scenario=mode, variant=variant.label)
                    | dict(cpu_s_per_1000=cpu, rps=rps, cpu_ratio=round(cpu / base_cpu, 3))
                    | dict(rps_ratio=round(rps / base_rps, 3), cpu_ratio_paired=round(paired, 3))
                )
    return rows


def print_table(rows: list[dict[str, Any]], first: str) -> None:
    print(
        f"\n{'database':<10}{'scenario':<10}{'variant':<12}{'CPU s/1k':>10}{'req/s':>10}"
        f"{'CPU/' + first:>14}{'req/s/' + first:>14}{'paired CPU/' + first:>18}"
    )
    for row in rows:
        print(
            f"{row['database']:<10}{row['scenario']:<10}{row['variant']:<12}"
            f"{row['cpu_s_per_1000']:>10.3f}{row['rps']:>10.1f}"
            f"{row['cpu_ratio']:>14.3f}{row['rps_ratio']:>14.3f}{row['cpu_ratio_paired']:>18.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        required=True,
        help="LABEL=TREE[:NAME=VALUE,...]; the first is the baseline",
    )
    parser.add_argument("--databases", default="postgres,sqlite", help="postgres, sqlite or both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "compare.json")
    args = parser.parse_args()
    variants: list[Variant] = args.variant
    if len({variant.label for variant in variants}) != len(variants):
        parser.error("variant labels must differ")
    sys.path[:0] = [str(variants[0].tree / "src"), str(variants[0].tree / "bench")]
    from harness import DATABASE_URL, REDIS_URL

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compare-") as directory:
        workdir = Path(directory)
        targets = {
            "postgres": Target("postgres", DATABASE_URL, 2, REDIS_URL),
            "sqlite": Target("sqlite", f"sqlite:///{workdir / 'bench.db'}", 1, None),
        }
        for name in args.databases.split(","):
            rounds += run_target(targets[name.strip()], variants, args, workdir)
    rows = summarise(rounds, variants)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "variants": [{"label": v.label, "tree": str(v.tree), "env": v.env} for v in variants],
        "seconds": args.seconds,
        "connections": args.connections,
        "summary": rows,
        "rounds": rounds,
    }
    args.output.write_text(json.dumps(document, indent=2))
    print_table(rows, variants[0].label)


if __name__ == "__main__":
    main()
