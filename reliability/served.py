"""A `contactbase serve` started by a script (the fuzz run, the OpenAPI check): a free port,
waiting until it is ready, stopping it as a deployment would."""

import socket
import subprocess
import time
import urllib.request


class NotReady(Exception):
    """The server exited, or did not answer /readyz in time."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll /readyz until the server answers 200; fail if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise NotReady(f"contactbase exited with status {server.returncode} at start-up")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise NotReady(f"contactbase was not ready within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server as a deployment would (SIGTERM), killing it if it hangs."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
