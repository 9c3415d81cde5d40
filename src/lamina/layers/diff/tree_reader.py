"""Reading a directory tree for the differ: one ``lstat`` per path, through dir fds.

A :class:`TreeReader` holds the tree's root fd and lists one directory at a time with
``os.scandir(fd)``, so the kernel never walks a long path and no symlink inside the tree
is ever followed (listing goes through fds; file contents are opened with
:func:`~lamina.layers.fsops.open_beneath`, which refuses symlinks on the way).

Order: lamina writes a layer depth-first with the entries of each directory sorted by
the bytes of their names, so a directory's entry comes right before its children
(``a``, ``a/b``, ``a.b``: the order of GNU ``tar --sort=name``). :func:`sort_key` gives
that order for a path: the tuple of its components as bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from lamina.errors import Conflict, NotFound
from lamina.layers import fsops
from lamina.layers.api import EntryType

# Never copied into a layer: overlayfs bookkeeping and the host's SELinux labels.
SKIP_XATTRS = ("trusted.overlay.", "security.selinux")

_KINDS = {
    stat.S_IFREG: EntryType.FILE,
    stat.S_IFDIR: EntryType.DIR,
    stat.S_IFLNK: EntryType.SYMLINK,
    stat.S_IFCHR: EntryType.CHAR,
    stat.S_IFBLK: EntryType.BLOCK,
    stat.S_IFIFO: EntryType.FIFO,
}


def sort_key(path: str) -> tuple[bytes, ...]:
    return tuple(os.fsencode(path).split(b"/"))


def kind_of(mode: int) -> EntryType | None:
    """The entry type of an ``st_mode``; None for sockets (never put in a layer)."""
    return _KINDS.get(stat.S_IFMT(mode))


@dataclass(slots=True)
class Node:
    """One path of a tree as the differ sees it."""

    path: str
    kind: EntryType
    st: os.stat_result
    linkname: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def inode(self) -> tuple[int, int]:
        return (self.st.st_dev, self.st.st_ino)


class TreeReader:
    """A tree to read, held by an fd. Use as a context manager."""

    __slots__ = ("fd", "path", "skip_xattrs")

    def __init__(
        self, path: str | os.PathLike[str], *, skip_xattrs: tuple[str, ...] = SKIP_XATTRS
    ) -> None:
        self.path = os.fspath(path)
        self.skip_xattrs = skip_xattrs
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise fsops.os_error("open tree", self.path, exc) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TreeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_dir(self, parent_fd: int, name: str) -> int:
        """An owned fd of the directory ``name`` in ``parent_fd`` (never a symlink)."""
        return os.open(name, fsops.O_DIR_READ, dir_fd=parent_fd)

    def scan(self, dir_fd: int, rel: str) -> list[Node]:
        """The nodes of one directory, sorted by name bytes; sockets left out."""
        prefix = f"{rel}/" if rel else ""
        skip = self.skip_xattrs
        nodes: list[Node] = []
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            name = entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: as if it never was
            kind = _KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is None:
                continue
            node = Node(prefix + name, kind, st)
            if kind is EntryType.SYMLINK:
                node.linkname = os.readlink(name, dir_fd=dir_fd)
            node.xattrs = fsops.read_xattrs_at(dir_fd, name, skip)
            nodes.append(node)
        return nodes

    def open_file(self, node: Node) -> int:
        """An owned O_RDONLY fd of a regular file, checked to be the inode scanned."""
        try:
            fd = fsops.open_beneath(self.fd, node.path, os.O_RDONLY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                raise _changed(node.path) from exc
            raise fsops.os_error("read", node.path, exc) from exc
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size) != (node.st.st_dev, node.st.st_ino, node.st.st_size):
            os.close(fd)
            raise _changed(node.path)
        return fd


def _changed(path: str) -> Conflict:
    return Conflict(
        f"{path!r} changed while the tree was being read",
        hint="do not write to a tree while lamina diffs or commits it",
    )


def same_content(a: TreeReader, na: Node, b: TreeReader, nb: Node, chunk: int = 1 << 20) -> bool:
    """Whether two regular files of equal size hold the same bytes."""
    fa = a.open_file(na)
    try:
        fb = b.open_file(nb)
    except NotFound:
        os.close(fa)
        raise
    try:
        while True:
            da = os.read(fa, chunk)
            db = os.read(fb, chunk)
            if da != db:
                return False
            if not da:
                return True
    finally:
        os.close(fa)
        os.close(fb)
