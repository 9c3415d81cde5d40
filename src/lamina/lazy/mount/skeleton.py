"""A skeleton directory for ``mkfs.erofs``: the tree's metadata with placeholder data.

Every regular file gets its real size, but its chunks hold only a 16-byte marker
(``LzMk`` + ino + chunk index + ``kMzL``) at their start and a hole after it. The marker
does two jobs: it stops mkfs.erofs 1.5 from deduplicating the all-zero chunks into one
(it hashes chunks), and it lets us find, in the blob mkfs wrote, which blob range holds
which (inode, chunk) without parsing EROFS chunk indexes. A chunk shorter than the
marker is filled with its real bytes instead (``eager``): it is tiny, and duplicates of
real content may be shared harmlessly.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from .api import Inode, Kind, Tree, paths

MARK = struct.Struct("<4sII4s")
MAGIC_HEAD, MAGIC_TAIL = b"LzMk", b"kMzL"


def marker(ino: int, chunk: int) -> bytes:
    return MARK.pack(MAGIC_HEAD, ino, chunk, MAGIC_TAIL)


def parse_marker(raw: bytes) -> tuple[int, int] | None:
    if len(raw) < MARK.size:
        return None
    head, ino, chunk, tail = MARK.unpack_from(raw)
    if head != MAGIC_HEAD or tail != MAGIC_TAIL:
        return None
    return ino, chunk


def build(tree: Tree, root: str, chunk_size: int, eager: Callable[[int, int, int], bytes]) -> None:
    """Write the skeleton of ``tree`` under ``root`` (created; must not exist)."""
    broot = os.fsencode(root)
    os.mkdir(broot)
    first: dict[int, bytes] = {}  # ino -> first path, for hardlinks
    dirs: list[tuple[bytes, int]] = [(broot, 1)]
    for rel, link in paths(tree):
        path = broot + b"/" + rel
        node = tree.inodes[link.ino]
        if link.ino in first:
            os.link(first[link.ino], path)
            continue
        first[link.ino] = path
        if node.kind is Kind.DIR:
            os.mkdir(path, 0o700)
            dirs.append((path, link.ino))
            continue
        if node.kind is Kind.SYMLINK:
            os.symlink(node.target, path)
        elif node.kind is Kind.REG:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, node.size)
                for index, start in enumerate(range(0, node.size, chunk_size)):
                    want = min(chunk_size, node.size - start)
                    data = eager(link.ino, start, want) if want < MARK.size else None
                    os.pwrite(fd, data if data is not None else marker(link.ino, index), start)
            finally:
                os.close(fd)
        else:
            os.mknod(path, node.st_mode, node.rdev)
        _attrs(path, node)
    # Directories last and deepest first, so creating children does not bump their mtime.
    for path, ino in reversed(dirs):
        node = tree.inodes[ino]
        _attrs(path, node)


def _attrs(path: bytes, node: Inode) -> None:
    os.chown(path, node.uid, node.gid, follow_symlinks=False)
    if node.kind is not Kind.SYMLINK:
        os.chmod(path, node.mode)  # after chown, which clears set-id bits
    for name, value in node.xattrs.items():
        os.setxattr(path, name, value, follow_symlinks=False)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)
