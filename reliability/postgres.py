"""A private PostgreSQL for one run: its own data directory from initdb, on a spare port."""

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

DATABASE = "contactbase"


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl: $PG_BIN, else the newest Debian-packaged server."""
    if "PG_BIN" in os.environ:
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server binaries found: set PG_BIN")
    return Path(initdb).parent


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class PrivateServer:
    """PostgreSQL in `root` (a directory this object owns), run as the `postgres` OS user."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.bin = postgres_bin()
        # PostgreSQL refuses to run as root: drop to its own user when we are root.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.running = False

    @property
    def url(self) -> str:
        """The URL contactbase and the audit connect with."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *command: str) -> None:
        """Run a PostgreSQL program as the cluster's owner."""
        subprocess.run(
            [*self.as_owner, *command], check=True, stdout=subprocess.DEVNULL, cwd=self.root
        )

    def initdb(self) -> None:
        """Create the cluster: trust on 127.0.0.1 only, sockets kept inside `root`."""
        if self.as_owner:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "shared_buffers = 64MB\n"
                "max_connections = 100\n"
            )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop it (`fast`: roll back open transactions, close connections, checkpoint)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def crash(self) -> None:
        """A crash, not a stop: kill -9 of the postmaster; its backends, orphaned, exit on their
        own. Returns once none of them is left (the next start recovers from the WAL)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        cluster = [pid, *(int(child) for child in children.stdout.split())]
        os.kill(pid, signal.SIGKILL)
        for _ in range(600):
            if not any(alive(process) for process in cluster):
                break
            time.sleep(0.05)
        # A dead postmaster that no one reaped (this sandbox's init does not) still answers
        # kill(pid, 0), so PostgreSQL would take it for a live one: once every process of the
        # cluster is gone, its lock files go too, as the reaped state a real host would be in.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        self.running = False

    async def create_database(self) -> None:
        """Create the database contactbase will use."""
        admin = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()

    async def terminate_backends(self) -> int:
        """Terminate every other session of the database (the server's pool): how many."""
        admin = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                DATABASE,
            )
        finally:
            await admin.close()
        return sum(1 for row in rows if row["done"])

    def destroy(self) -> None:
        """Stop the server however it can be stopped; the caller removes `root`."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self.stop("immediate")
        except (subprocess.CalledProcessError, OSError):
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
