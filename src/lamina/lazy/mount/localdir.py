"""A :class:`~.api.Source` backed by a plain directory, for tests and benchmarks.

It stands in for the lazy loader: ``tree()`` walks the directory once, ``fill`` reads
the real file. Knobs (in the JSON arg) model a registry: ``delay_ms`` sleeps per fill
call (a round trip), ``fail_flag`` names a file whose existence makes fill raise, and
``log`` names a file that gets one line per fill call (so a test can count them).
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass

from .api import ROOT_INO, Inode, Kind, Link, Tree

_KINDS = {
    stat.S_IFREG: Kind.REG,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFCHR: Kind.CHR,
    stat.S_IFBLK: Kind.BLK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCK,
}


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name in os.listxattr(path, follow_symlinks=False):
        out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
    return out


def scan(root: str) -> tuple[Tree, dict[int, bytes]]:
    """The tree under ``root`` and, per regular-file ino, one path to its data."""
    broot = os.fsencode(root)
    by_dev_ino: dict[tuple[int, int], int] = {}
    inodes: dict[int, Inode] = {}
    links: list[Link] = []
    data_path: dict[int, bytes] = {}

    def record(path: bytes, st: os.stat_result, ino: int) -> None:
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        target = os.readlink(path) if kind is Kind.SYMLINK else b""
        size = st.st_size if kind in (Kind.REG, Kind.SYMLINK) else 0
        inodes[ino] = Inode(
            ino=ino,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            size=size,
            rdev=st.st_rdev if kind in (Kind.CHR, Kind.BLK) else 0,
            target=target,
            xattrs=_xattrs(path),
        )
        if kind is Kind.REG:
            data_path[ino] = path

    st = os.lstat(broot)
    by_dev_ino[(st.st_dev, st.st_ino)] = ROOT_INO
    record(broot, st, ROOT_INO)
    stack = [(broot, ROOT_INO)]
    while stack:
        dpath, dino = stack.pop()
        with os.scandir(dpath) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            key = (st.st_dev, st.st_ino)
            ino = by_dev_ino.get(key)
            if ino is None:
                ino = len(by_dev_ino) + 1
                by_dev_ino[key] = ino
                record(entry.path, st, ino)
            links.append(Link(parent=dino, name=os.fsencode(entry.name), ino=ino))
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, ino))
    return Tree(inodes=inodes, links=tuple(links)), data_path


@dataclass
class LocalDirSource:
    root: str
    delay_ms: float = 0.0
    fail_flag: str = ""
    log: str = ""

    def __post_init__(self) -> None:
        self._tree, self._paths = scan(self.root)

    def tree(self) -> Tree:
        return self._tree

    def fill(self, ino: int, offset: int, length: int) -> bytes:
        if self.fail_flag and os.path.exists(self.fail_flag):
            raise OSError(f"fill of inode {ino} failed on purpose ({self.fail_flag} exists)")
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        if self.log:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{ino} {offset} {length}\n".encode())
            finally:
                os.close(fd)
        fd = os.open(self._paths[ino], os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)


def from_json(arg: str) -> LocalDirSource:
    """The :class:`~.api.SourceSpec` factory: ``lamina.lazy.mount.localdir:from_json``."""
    return LocalDirSource(**json.loads(arg))
