"""Design A: a pyfuse3 daemon serving the whole tree from user space.

Metadata comes from the in-memory :class:`~.api.Tree` (attributes are prebuilt, entry
and attr timeouts are a day: the tree never changes). Data: a read checks the block
bitmap, fills the missing blocks in a worker thread, and answers from a sparse cache
file per inode. ``keep_cache`` keeps the kernel page cache across opens, so a warm
re-read never reaches the daemon.

FUSE passthrough (the kernel reading a backing file directly, kernel >= 6.9) needs
libfuse >= 3.17; Debian 12 ships 3.14 and pyfuse3 3.5 has no binding for it, so every
cold page here costs a round trip to Python.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable, Sequence

import pyfuse3
import trio

from .api import Kind, Source, children, nlinks
from .cache import BlockCache, FillError

TIMEOUT = 86400.0


class TreeOps(pyfuse3.Operations):
    def __init__(self, source: Source, cache_dir: str, block_size: int) -> None:
        super().__init__()
        self.tree = source.tree()
        nl = nlinks(self.tree)
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        for ino, node in self.tree.inodes.items():
            a = pyfuse3.EntryAttributes()
            a.st_ino = ino
            a.generation = 0
            a.entry_timeout = TIMEOUT
            a.attr_timeout = TIMEOUT
            a.st_mode = node.st_mode
            a.st_nlink = nl[ino]
            a.st_uid = node.uid
            a.st_gid = node.gid
            a.st_rdev = node.rdev
            a.st_size = node.size
            a.st_blksize = 4096
            a.st_blocks = -(-node.size // 512)
            a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime_ns
            self.attrs[ino] = a
        kids = children(self.tree)
        self.dirs = {ino: {link.name: link.ino for link in ls} for ino, ls in kids.items()}
        self.listing = {ino: [(link.name, link.ino) for link in ls] for ino, ls in kids.items()}
        self.cache_dir = cache_dir
        self.fds: dict[int, int] = {}
        sizes = {i: n.size for i, n in self.tree.inodes.items() if n.kind is Kind.REG}
        self.cache = BlockCache(source, sizes, block_size, self._store)
        self.limiter = trio.CapacityLimiter(16)

    def _fd(self, ino: int) -> int:
        fd = self.fds.get(ino)
        if fd is None:
            path = os.path.join(self.cache_dir, str(ino))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self.fds[ino] = fd
        return fd

    def _store(self, ino: int, offset: int, data: bytes) -> None:
        os.pwrite(self._fd(ino), data, offset)

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        try:
            return self.attrs[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        entries = self.dirs.get(parent_inode)
        if entries is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name == b".":
            return self.attrs[parent_inode]
        ino = entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.tree.inodes[inode]
        if node.kind is not Kind.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self.listing:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self.listing[fh]
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self.attrs[ino], i + 1):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = self.tree.inodes[inode].xattrs.get(name)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return list(self.tree.inodes[inode].xattrs)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        if self.tree.inodes[inode].kind is not Kind.REG:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if self.cache.missing(fh, off, size):
            try:
                await trio.to_thread.run_sync(
                    self.cache.ensure, fh, off, size, limiter=self.limiter
                )
            except FillError:
                raise pyfuse3.FUSEError(errno.EIO) from None
        end = min(off + size, self.cache.sizes[fh])
        if end <= off:
            return b""
        return os.pread(self._fd(fh), end - off, off)

    async def release(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_files = len(self.attrs)
        s.f_namemax = 255
        return s


def serve(
    source: Source,
    mountpoint: str,
    state_dir: str,
    block_size: int,
    ready: Callable[[], None],
) -> None:
    """Mount, call ``ready``, serve until unmounted (or SIGTERM/SIGINT), clean up."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one cache fd per read inode
    cache_dir = os.path.join(state_dir, "cache")
    os.makedirs(cache_dir, exist_ok=True)
    ops = TreeOps(source, cache_dir, block_size)
    options = set(pyfuse3.default_options)
    options |= {"fsname=lamina-lazy", "subtype=lamina", "ro", "allow_other"}
    pyfuse3.init(ops, mountpoint, options)
    ready()

    async def main() -> None:
        with trio.open_signal_receiver(15, 2) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

                nursery.start_soon(stop_on_signal)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)
        for fd in ops.fds.values():
            os.close(fd)
