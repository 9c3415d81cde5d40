"""Shared CLI plumbing: open the store, print tables and JSON, show progress."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lamina.store.local import LocalStore


def open_store(args: argparse.Namespace) -> LocalStore:
    from lamina.store.local import LocalStore
    from lamina.sysinfo import default_root

    return LocalStore(args.root or default_root())


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    sys.stdout.write("".join(line + "\n" for line in table_lines(headers, rows)))


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded like docker's: three spaces between, last column unpadded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("   ".join([*cells, row[-1]]).rstrip())
    return out


def human_size(n: int) -> str:
    """Docker's units: decimal, three significant digits (``5.2MB``)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def time_ago(created: datetime | None, now: float | None = None) -> str:
    if created is None:
        return "N/A"
    seconds = (now if now is not None else time.time()) - created.timestamp()
    if seconds < 0:
        return "Less than a second ago"
    for unit, span in (
        ("years", 31536000),
        ("months", 2592000),
        ("weeks", 604800),
        ("days", 86400),
        ("hours", 3600),
        ("minutes", 60),
    ):
        if seconds >= 2 * span:
            return f"{int(seconds // span)} {unit} ago"
        if seconds >= span:
            return f"About a{'n' if unit == 'hours' else ''} {unit[:-1]} ago"
    if seconds < 1:
        return "Less than a second ago"
    return "1 second ago" if int(seconds) == 1 else f"{int(seconds)} seconds ago"


def iso(created: datetime | None) -> str | None:
    return created.astimezone(UTC).isoformat() if created else None


class Progress(Protocol):
    def __call__(
        self, advance: int, total: int | None = None, description: str | None = None
    ) -> None: ...


@contextmanager
def progress_bar(
    description: str, total: int | None = None, enabled: bool = True
) -> Iterator[Progress]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not enabled or not sys.stderr.isatty():

        def nothing(advance: int, total: int | None = None, description: str | None = None) -> None:
            return None

        yield nothing
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(advance: int, total: int | None = None, description: str | None = None) -> None:
            kwargs: dict[str, Any] = {"advance": advance}
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            bar.update(task, **kwargs)

        yield update
