"""Create throughput with the Redis rate limiter against in-process counting, side by side.

Runs contactbase on PostgreSQL (one worker), a Space whose limits are raised out of the way, and
wrk posting unique seed-shaped contacts; alternates the two set-ups ROUNDS times and reports
medians and the median of the rounds' ratios. Usage: .venv/bin/python bench/limiter.py
[--seconds 10] [--rounds 6]
"""

import argparse
import asyncio
import json
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from database import fresh_database
from harness import (
    DATABASE_URL,
    REDIS_URL,
    ROOT,
    ensure_wrk,
    free_port,
    make_key,
    start_server,
    wrk,
)


def measure(wrk_path: str, key: str, redis_url: str | None, seconds: int) -> dict[str, float]:
    port = free_port()
    server = start_server(port, 1, redis_url)
    try:
        tag = uuid.uuid4().hex[:8]
        wrk(wrk_path, port, ["create", key, tag + "w", "0", "0", "0"], 2, 16)  # warm-up
        return wrk(wrk_path, port, ["create", key, tag, "0", "0", "0"], seconds, 16)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    wrk_path = ensure_wrk()
    fresh_database(DATABASE_URL)
    key = asyncio.run(make_key())
    runs: dict[str, list[dict[str, float]]] = {"redis": [], "memory": []}
    setups = [("redis", REDIS_URL), ("memory", None)]
    for round_number in range(1, args.rounds + 1):
        # Alternate which goes first, so that drift on a shared machine cancels out.
        for name, redis_url in setups if round_number % 2 else setups[::-1]:
            figures = measure(wrk_path, key, redis_url, args.seconds)
            runs[name].append(figures)
            print(
                f"round {round_number} {name:6}: {figures['rps']:7.1f} creates/s, "
                f"p99 {figures['p99_us'] / 1000:.1f} ms",
                flush=True,
            )
    median = {name: statistics.median(r["rps"] for r in results) for name, results in runs.items()}
    ratios = [r["rps"] / m["rps"] for r, m in zip(runs["redis"], runs["memory"], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"median creates/s: redis limiter {median['redis']:.1f}, "
        f"in-process counting {median['memory']:.1f}; median of the rounds' ratios "
        f"{ratio:.3f} (target >= 0.9)"
    )
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "limiter.json").write_text(
        json.dumps(
            {
                "create_rps_redis_limiter": median["redis"],
                "create_rps_memory_limiter": median["memory"],
                "ratio": ratio,
                "round_ratios": ratios,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
