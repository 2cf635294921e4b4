"""Files that hold the Space's data or a key: created readable by the service's user alone from
the first byte (never made private after being written, when another user could already have
opened them), and never through a symbolic link someone else planted."""

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW


def create_private_file(path: Path | None) -> None:
    """Create `path` empty and private unless it exists (SQLite then writes into it, and gives
    its -wal and -shm files the same mode)."""
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Made meanwhile by another process (FileExistsError): theirs to have made private.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, FLAGS | os.O_EXCL, PRIVATE))


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, private from its creation; a link at `path` is refused."""
    fd = os.open(path, FLAGS | os.O_TRUNC, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)  # an older file of another mode becomes private too
        os.write(fd, text.encode())
    finally:
        os.close(fd)
