"""`make fuzz`: schemathesis against a running contactbase and its own OpenAPI document.

Serves a fresh SQLite database from a temporary directory, makes two Spaces with a key each
through the `contactbase` command, runs schemathesis' CLI over every operation with each key,
prints the figures and exits non-zero on any failure. The bounded run is tests/test_fuzz.py.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT / "bench"))
from database import fresh_database  # noqa: E402  (the benchmarks' fresh database)
from served import NotReady, free_port, stop, wait_until_ready  # noqa: E402

from contactbase.ratelimit import ENDPOINTS  # noqa: E402  (every limit, raised out of the way)
from contactbase.spaces.service import PERMISSIONS  # noqa: E402

# The goal's checks: no 5xx, and every status code, content type and body as documented.
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
UNLIMITED = "1000000"  # per minute: the fuzzer should meet the rules, not the rate limits


def contactbase(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run one `contactbase` command and return the JSON value it printed."""
    command = [str(BIN / "python"), "-m", "contactbase", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    value: dict[str, Any] = json.loads(done.stdout)
    return value


def make_space(env: dict[str, str], name: str) -> str:
    """A Space whose limits stay out of the way, and a read-write key of it."""
    space_id = str(contactbase(env, "space", "create", name)["id"])
    for endpoint in ENDPOINTS:
        contactbase(env, "space", "set-limit", space_id, endpoint, UNLIMITED)
    # Every permission, erasing too, so that every operation is fuzzed past its key check.
    granted = [arg for permission in PERMISSIONS for arg in ("--permission", permission)]
    return str(contactbase(env, "key", "create", space_id, "--name", "fuzz", *granted)["key"])


def fuzz(base_url: str, key: str, args: argparse.Namespace, work: Path, run: str) -> dict[str, Any]:
    """Run schemathesis over every operation with one key; return its JSON report."""
    report = work / f"{run}.json"
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        args.checks,
        "--max-examples",
        str(args.max_examples),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--generation-database",
        "none",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    print(f"\n== {run} ==", flush=True)
    # In the temporary directory, so that schemathesis' own files never land in the checkout.
    done = subprocess.run(command, cwd=work, check=False)
    if not report.exists():
        raise SystemExit(f"schemathesis exited with status {done.returncode} and no report")
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def summarise(run: str, report: dict[str, Any]) -> int:
    """Print one run's figures; return how many problems it found."""
    cases = report["test_cases"]
    failures: int = sum(failure["count"] for failure in report["failures"])
    # A schema part schemathesis cannot resolve is left out of every case: an untested gap.
    unresolved = report["warnings"].get("unresolvable_reference", [])
    problems = failures + len(report["errors"]) + len(unresolved)
    print(
        f"{run}: {cases['generated']} cases in {report['running_time']:.0f} s (seed "
        f"{report['seed']}), {failures} failures, {len(report['errors'])} errors, "
        f"{len(unresolved)} operations with unresolvable references"
    )
    for failure in report["failures"]:
        operations = ", ".join(failure["operations"])
        print(f"  {failure['code']} {failure['title']} ({failure['count']}): {operations}")
    for error in report["errors"]:
        print(f"  error: {error}")
    for operation in unresolved:
        print(f"  unresolvable reference, body or parameters not fuzzed: {operation}")
    return problems


def main() -> int:
    """Serve, fuzz with both Spaces' keys, stop the server; 1 when anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200, help="per operation and key")
    parser.add_argument("--seed", type=int, help="replay a run (its seed is printed)")
    parser.add_argument("--checks", default=CHECKS, help="schemathesis checks, or 'all'")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="serve from this PostgreSQL database, dropped and created afresh (default: a new "
        "SQLite file); on PostgreSQL, create and get take the direct asyncpg path",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="contactbase-fuzz-") as directory:
        work = Path(directory)
        if args.postgres:
            fresh_database(args.postgres)
        env = {
            **os.environ,
            "CONTACTBASE_DATABASE_URL": args.postgres or f"sqlite:///{work / 'contactbase.db'}",
            "CONTACTBASE_EXPORT_DIR": str(work / "exports"),
        }
        env.pop("CONTACTBASE_REDIS_URL", None)
        contactbase(env, "migrate")
        keys = {"space_a": make_space(env, "Fuzz A"), "space_b": make_space(env, "Fuzz B")}
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        serve = [str(BIN / "python"), "-m", "contactbase", "serve", "--port", str(port)]
        with (work / "server.log").open("wb") as log:
            server = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                try:
                    wait_until_ready(base_url, server)
                except NotReady as failure:
                    raise SystemExit(str(failure)) from None
                reports = {run: fuzz(base_url, key, args, work, run) for run, key in keys.items()}
            finally:
                stop(server)
        print("\n== summary ==")
        problems = sum(summarise(run, report) for run, report in reports.items())
        total = sum(report["test_cases"]["generated"] for report in reports.values())
        print(f"{total} cases in all, {problems} problems")
        log_lines = (work / "server.log").read_text(errors="replace").splitlines()
        noteworthy = [line for line in log_lines if not line.startswith("INFO:")]
        if noteworthy:  # the banner, warnings, errors and tracebacks: what a 5xx left behind
            print(f"\nserver log, {len(noteworthy)} lines other than INFO (the first 40):")
            print("\n".join(noteworthy[:40]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
