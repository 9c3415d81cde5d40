"""Reading ``/proc/<pid>/mountinfo`` (proc(5)): what is mounted where, with which options.

The one parser of mountinfo in lamina: the snapshotters, :mod:`lamina.snapshot.mount`
(unmounting), the runtime (cgroup layout, busy container dirs) and the Debian bootstrap
(mounts left under its tree) all read it through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/self/mountinfo (proc(5))."""

    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # proc(5): space, tab, newline and backslash appear as \040, \011, \012, \134
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mountinfo(pid: str = "self") -> list[MountInfo]:
    """The mounts of a process's mount namespace."""
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        return list(parse_mountinfo(fh))


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute, as mountinfo gives them)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path`` (symlinks resolved) in this mount namespace,
    deepest first: the order that unmounts a submount before its parent."""
    real = os.path.realpath(path)
    found = [m.mount_point for m in mountinfo() if is_under(m.mount_point, real)]
    return sorted(found, key=len, reverse=True)


def parse_mountinfo(lines: Iterable[str]) -> Iterator[MountInfo]:
    """The lines of a mountinfo file as values; lines that do not parse are skipped."""
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            yield MountInfo(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=fields[5],
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=fields[sep + 3] if len(fields) > sep + 3 else "",
            )
        except (ValueError, IndexError):
            continue


def overlay_uppers() -> set[str]:
    """The upper dirs of every overlay mounted in this mount namespace."""
    out = set()
    for m in mountinfo():
        if m.fstype != "overlay":
            continue
        for opt in m.super_options.split(","):
            if opt.startswith("upperdir="):
                out.add(_unescape(opt[len("upperdir=") :]))
    return out
