"""The contract between a lazy loader and a mount mechanism.

The loader describes an immutable tree as inode records plus links (names), and supplies
``fill(ino, offset, length) -> bytes``: the mechanism calls it, from worker threads, for
a file range the kernel needs and does not have yet. ``fill`` may block (a registry
round trip) and may raise; the reader then gets EIO and a later read calls ``fill``
again. The mechanism caches what ``fill`` returned, so each range is filled once.

A mount must outlive the process that asked for it, so the mechanism runs a detached
daemon; the daemon rebuilds the :class:`Source` itself from a :class:`SourceSpec`
(``module:function`` plus a JSON argument) instead of receiving Python objects.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

ROOT_INO = 1


class Kind(Enum):
    REG = "reg"
    DIR = "dir"
    SYMLINK = "symlink"
    CHR = "chr"
    BLK = "blk"
    FIFO = "fifo"
    SOCK = "sock"

    @property
    def ifmt(self) -> int:
        return _IFMT[self]


_IFMT = {
    Kind.REG: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHR: stat.S_IFCHR,
    Kind.BLK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCK: stat.S_IFSOCK,
}


@dataclass(frozen=True, slots=True)
class Inode:
    """One inode. ``mode`` holds the permission bits only (07777); ``kind`` the type."""

    ino: int
    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0  # regular files: data length; symlinks: len(target)
    rdev: int = 0  # devices: os.makedev(major, minor)
    target: bytes = b""  # symlinks
    xattrs: Mapping[bytes, bytes] = field(default_factory=dict)

    @property
    def st_mode(self) -> int:
        return self.kind.ifmt | (self.mode & 0o7777)


@dataclass(frozen=True, slots=True)
class Link:
    """A name: ``name`` in directory ``parent`` is inode ``ino``. Hardlinks share ``ino``."""

    parent: int
    name: bytes
    ino: int


@dataclass(frozen=True, slots=True)
class Tree:
    """An immutable tree; the root is :data:`ROOT_INO` and has no link."""

    inodes: Mapping[int, Inode]
    links: tuple[Link, ...]


class Filler(Protocol):
    def fill(self, ino: int, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` of regular file ``ino`` (length is already
        clipped to the file size). Called from worker threads, concurrently; may block;
        raise any exception to fail the read with EIO."""
        ...


class Source(Filler, Protocol):
    def tree(self) -> Tree: ...


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How a detached daemon builds its :class:`Source`: ``factory(arg)``."""

    factory: str  # "package.module:function"
    arg: str = "{}"  # JSON, passed as a string to the factory


@dataclass(frozen=True, slots=True)
class MountHandle:
    design: str
    mountpoint: str
    state_dir: str
    pid: int


class Mechanism(Protocol):
    name: str

    def mount(
        self, spec: SourceSpec, mountpoint: str, state_dir: str, *, block_size: int
    ) -> MountHandle:
        """Start a detached daemon that mounts the tree; return once it is mounted."""
        ...


def nlinks(tree: Tree) -> dict[int, int]:
    """st_nlink per inode: names for files, 2 + subdirectories for directories."""
    count: dict[int, int] = dict.fromkeys(tree.inodes, 0)
    for ino, node in tree.inodes.items():
        if node.kind is Kind.DIR:
            count[ino] = 2
    for link in tree.links:
        if tree.inodes[link.ino].kind is Kind.DIR:
            count[link.parent] += 1
        else:
            count[link.ino] += 1
    return count


def children(tree: Tree) -> dict[int, list[Link]]:
    """Directory ino -> its links, sorted by name (readdir order, stable)."""
    out: dict[int, list[Link]] = {
        ino: [] for ino, node in tree.inodes.items() if node.kind is Kind.DIR
    }
    for link in tree.links:
        out[link.parent].append(link)
    for links in out.values():
        links.sort(key=lambda link: link.name)
    return out


def paths(tree: Tree) -> Iterable[tuple[bytes, Link]]:
    """(relative path, link) for every link, parents before children."""
    kids = children(tree)
    stack: list[tuple[bytes, int]] = [(b"", ROOT_INO)]
    while stack:
        prefix, ino = stack.pop()
        for link in kids[ino]:
            path = prefix + link.name if not prefix else prefix + b"/" + link.name
            yield path, link
            if tree.inodes[link.ino].kind is Kind.DIR:
                stack.append((path, link.ino))
