"""The contactbase server under a restart loop, as systemd's Restart=always would run it."""

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import httpx

# systemd's default RestartSec is 100 ms.
RESTART_DELAY = 0.1


class Supervisor:
    """Runs `contactbase serve` on `port`; whenever the process dies, starts a new one."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.spawned = asyncio.Event()
        self.spawn_times: list[float] = []
        self.exits: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "contactbase", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.spawn_times.append(time.monotonic())
        self.spawned.set()
        return process

    async def _loop(self) -> None:
        while not self.stopping:
            self.process = await self._spawn()
            code = await self.process.wait()
            self.exits.append(code)
            if not self.stopping:
                await asyncio.sleep(RESTART_DELAY)

    async def start(self) -> None:
        """Start the loop and wait (30 s at most) until the first server answers /healthz."""
        self._task = asyncio.create_task(self._loop(), name="supervisor")
        if await self.answering(30) is None:
            raise RuntimeError(f"contactbase did not answer on port {self.port}; see {self.log}")

    async def answering(self, within: float) -> float | None:
        """When (monotonic) the server first answered /healthz, polling every 20 ms."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if self._task is not None and self._task.done():
                    self._task.result()
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get(f"http://127.0.0.1:{self.port}/healthz")
                    if response.status_code == 200:
                        return time.monotonic()
                await asyncio.sleep(0.02)
        return None

    async def kill_and_wait_restart(self) -> float:
        """kill -9 the server; return when the supervisor spawned its replacement (monotonic)."""
        assert self.process is not None
        self.spawned.clear()
        os.kill(self.process.pid, signal.SIGKILL)
        await self.spawned.wait()
        return self.spawn_times[-1]

    async def stop(self) -> None:
        """Stop the loop and the server (SIGTERM, then SIGKILL after 10 s)."""
        self.stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                self.kill_now()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)

    def kill_now(self) -> None:
        """Synchronous last resort for cleanup: SIGKILL the server's whole process group."""
        self.stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
