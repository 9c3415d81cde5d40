"""What a container changed, read from its overlay upper dir: ``docker diff``'s A/C/D list.

The upper dir holds exactly the changes: a char device 0/0 is a deleted path (D); any
other entry is added (A) when no lower layer has that path, else changed (C). A
directory that was copied up only because something below it changed is C, as Docker
shows it. Lower layers are looked at newest first; a whiteout or an opaque directory in
a newer one hides the older ones.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence

from lamina.layers import fsops
from lamina.layers.api import OVERLAY_OPAQUE_XATTRS

ADDED, CHANGED, DELETED = "A", "C", "D"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in OVERLAY_OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class _Lowers:
    """Existence of paths in a stack of lower dirs, without following any symlink."""

    def __init__(self, lowers: Sequence[str]) -> None:
        self._fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in lowers]
        self._dirs = list(lowers)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)

    def _lstat(self, fd: int, rel: str) -> os.stat_result | None:
        try:
            opened = fsops.open_beneath(fd, rel, os.O_PATH)
        except OSError as exc:
            # ENOENT: not here; ELOOP/ENOTDIR: a symlink or file on the way, so the
            # path cannot exist below it in this layer.
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        try:
            return os.fstat(opened)
        finally:
            os.close(opened)

    def exists(self, rel: str) -> bool:
        parts = rel.split("/")
        for fd, base in zip(self._fds, self._dirs, strict=True):
            st = self._lstat(fd, rel)
            if st is not None:
                return not _is_whiteout(st)
            # a whiteout of an ancestor, or an opaque ancestor, hides older layers
            for i in range(1, len(parts)):
                anc = "/".join(parts[:i])
                ast = self._lstat(fd, anc)
                if ast is None:
                    continue
                if _is_whiteout(ast) or not stat.S_ISDIR(ast.st_mode):
                    return False
                if _is_opaque(os.path.join(base, anc)):
                    return False
        return False


def overlay_changes(upper: str, lowers: Sequence[str]) -> list[tuple[str, str]]:
    """``[(kind, "/path"), ...]`` sorted by path; ``lowers`` newest first."""
    stack = _Lowers(lowers)
    try:
        return sorted(_walk(upper, "", stack), key=lambda change: change[1])
    finally:
        stack.close()


def _walk(upper: str, rel: str, lowers: _Lowers, hidden: bool = False) -> Iterator[tuple[str, str]]:
    """``hidden``: below an opaque directory, where no lower path shows through."""
    with os.scandir(os.path.join(upper, rel) if rel else upper) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        existed = not hidden and lowers.exists(path)
        if _is_whiteout(st):
            if existed:
                yield DELETED, "/" + path
            continue
        yield (CHANGED if existed else ADDED), "/" + path
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(upper, path, lowers, hidden or _is_opaque(entry.path))
