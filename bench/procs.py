"""What the benchmarks read of a running server, from /proc and its health endpoint; nothing
here imports contactbase, so a benchmark can drive servers of other source trees."""

import os
import subprocess
import time
from pathlib import Path

import httpx

TICKS = os.sysconf("SC_CLK_TCK")


def workers_of(pid: int) -> list[int]:
    """The server's worker processes: its children, or itself when it runs one worker."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(child) for child in path.read_text().split()] if path.exists() else []
    return found or [pid]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def peak_rss_mb(pids: list[int]) -> float:
    """The largest peak resident memory among the processes."""
    peaks = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def wait_until_healthy(server: "subprocess.Popen[bytes]", port: int, timeout: float = 30) -> None:
    """Return once the server answers /healthz (and its workers have had a second to start);
    kill it if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                time.sleep(1)  # let every worker finish starting
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server on port {port} did not start")
