"""The output of the host's ``ps``, cut down to one container's processes (``lamina
top``, as ``docker top``): text in, a table out (no I/O).

``ps`` prints a header and one row per process; the rows kept are those whose ``PID``
column is one of the container's pids. Columns are split on blanks, and the last one
(the command, which holds blanks) takes the rest of the row, as Docker does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from lamina.errors import InvalidArgument

__all__ = ["PsTable", "filter_ps"]


@dataclass(frozen=True, slots=True)
class PsTable:
    titles: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_json(self) -> list[dict[str, Any]]:
        """One object per process, keyed by the lower-cased titles; ``pid`` (and
        ``ppid``) as numbers."""
        out = []
        for row in self.rows:
            doc: dict[str, Any] = {}
            for title, cell in zip(self.titles, row, strict=True):
                key = title.lower()
                doc[key] = int(cell) if key in ("pid", "ppid") and cell.isdigit() else cell
            out.append(doc)
        return out


def filter_ps(output: str, pids: Collection[int]) -> PsTable:
    """The header of ``output`` and its rows of the processes ``pids``."""
    lines = output.splitlines()
    if not lines:
        raise InvalidArgument("ps printed nothing", hint="check the ps options")
    titles = tuple(lines[0].split())
    if "PID" not in titles:
        raise InvalidArgument(
            "the output of ps has no PID column", hint="give ps options that print it, e.g. -ef"
        )
    column = titles.index("PID")
    wanted = {str(p) for p in pids}
    rows = []
    for line in lines[1:]:
        cells = line.split(None, len(titles) - 1)
        if len(cells) > column and cells[column] in wanted:
            rows.append(tuple(cells + [""] * (len(titles) - len(cells))))
    return PsTable(titles, tuple(rows))
