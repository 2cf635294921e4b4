"""The `import` command's progress on standard error, as it reads the file (docs/import.md)."""

import time
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:  # importing it loads FastAPI (its validation): not for `contactbase --help`
    from contactbase.contacts.imports import Counts


class ImportMeter:
    """An import's progress on `console` (standard error): on a terminal a bar (bytes read of
    the file's size, lines a second, time left); otherwise a line every PLAIN_EVERY seconds."""

    PLAIN_EVERY = 5.0

    def __init__(self, size: int, *, dry_run: bool, console: Console) -> None:
        self.size, self.dry_run, self.console = size, dry_run, console
        self.began = self.shown = time.monotonic()
        self.bar: Progress | None = None
        self.task: Any = None

    def __call__(self, counts: "Counts") -> None:
        now = time.monotonic()
        start_offset, start_line = counts.started
        rate = (counts.lines - start_line) / max(now - self.began, 1e-9)
        if self.console.is_terminal:
            if self.bar is None:
                self.bar = Progress(
                    TextColumn("checking" if self.dry_run else "importing"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeRemainingColumn(),
                    console=self.console,
                )
                self.task = self.bar.add_task("", total=self.size, completed=start_offset, rate="")
                self.bar.start()
            self.bar.update(
                self.task,
                completed=counts.offset,
                total=max(self.size, counts.offset),
                rate=f"{rate:,.0f} lines/s",
            )
        elif now - self.shown >= self.PLAIN_EVERY:
            self.shown = now
            done = (
                f"valid {counts.valid}"
                if self.dry_run
                else f"created {counts.created}, merged {counts.merged}"
            )
            typer.echo(
                f"{'checked' if self.dry_run else 'imported'} {counts.lines} lines ({done}, "
                f"failed {counts.failed}), {rate:,.0f} lines/s",
                file=self.console.file,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
