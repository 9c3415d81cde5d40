"""Design B: EROFS metadata in the kernel, data filled by fanotify pre-content events.

``mkfs.erofs --chunksize --blobdev`` turns a skeleton (:mod:`.skeleton`) into a metadata
image plus a blob holding every file's chunks. We punch the placeholder chunks out of
the blob, so it is sparse, put a FAN_PRE_ACCESS mark on it, and mount the image
file-backed (kernel >= 6.12: ``mount(2)`` of a regular file, no loop device) with
``device=<blob>``. A read of a file goes: EROFS metadata (kernel only) -> the blob
range of the chunk -> a pre-content event -> we ``fill`` that chunk, write it into the
blob, answer FAN_ALLOW -> the kernel reads the now-present bytes. Metadata operations
(lookup, stat, readdir, readlink, xattrs) never leave the kernel.

Our own writes to the blob go through a descriptor opened *before* the mark exists:
the kernel decides at open time whether a file can raise pre-content events, so that
descriptor never blocks on us.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import os
import select
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lamina.errors import ToolError

from . import fanotify, skeleton
from .api import Kind, Source
from .cache import BlockCache, FillError

MNT_DETACH = 2
MS_RDONLY = 1
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
BLOCK = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_c = ctypes.c_char_p
_libc.mount.argtypes = [_c, _c, _c, ctypes.c_ulong, _c]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


@dataclass(frozen=True, slots=True)
class Extent:
    blob_off: int
    ino: int
    chunk: int
    length: int  # bytes of file data (the blob range is rounded up to BLOCK)


def mount_file(image: str, mountpoint: str, blob: str) -> None:
    """A file-backed EROFS mount through mount(2) (util-linux would set up a loop)."""
    opts = f"device={blob}".encode()
    if _libc.mount(image.encode(), mountpoint.encode(), b"erofs", MS_RDONLY, opts) != 0:
        e = ctypes.get_errno()
        raise ToolError(
            f"mount -t erofs {image} on {mountpoint}: {os.strerror(e)}",
            hint="file-backed EROFS mounts need Linux >= 6.12 and CONFIG_EROFS_FS",
        )


def umount(mountpoint: str, *, lazy: bool = False) -> None:
    if _libc.umount2(mountpoint.encode(), MNT_DETACH if lazy else 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {mountpoint}: {os.strerror(e)}")


def build_image(source: Source, work: str, chunk_size: int) -> tuple[str, str, list[Extent]]:
    """Skeleton -> mkfs.erofs -> (image, sparse blob, extents sorted by blob offset)."""
    tree = source.tree()
    skel, image, blob = (os.path.join(work, n) for n in ("skel", "meta.erofs", "blob"))
    skeleton.build(tree, skel, chunk_size, source.fill)
    cmd = ["mkfs.erofs", "--quiet", f"--chunksize={chunk_size}", f"--blobdev={blob}"]
    cmd += ["--preserve-mtime", image, skel]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(f"mkfs.erofs failed: {proc.stderr.strip()}", hint=" ".join(cmd))
    shutil.rmtree(skel)
    sizes = {i: n.size for i, n in tree.inodes.items() if n.kind is Kind.REG}
    extents = _scan_blob(blob, sizes, chunk_size)
    return image, blob, extents


def _scan_blob(blob: str, sizes: dict[int, int], chunk_size: int) -> list[Extent]:
    """Walk the blob chunk by chunk via the markers, then punch the placeholders out."""
    extents: list[Extent] = []
    seen: set[tuple[int, int]] = set()
    fd = os.open(blob, os.O_RDWR)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            found = skeleton.parse_marker(os.pread(fd, skeleton.MARK.size, pos))
            if found is None or found in seen or found[0] not in sizes:
                pos += BLOCK  # an eager chunk (< 16 bytes): real data, one block
                continue
            seen.add(found)
            ino, chunk = found
            length = min(chunk_size, sizes[ino] - chunk * chunk_size)
            extents.append(Extent(pos, ino, chunk, length))
            span = -(-length // BLOCK) * BLOCK
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            if _libc.fallocate(fd, mode, pos, span) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"punching {blob}: {os.strerror(e)}")
            pos += span
    finally:
        os.close(fd)
    return extents


class Filler:
    """Answers pre-content events on the blob: fill the chunks they touch, then allow."""

    def __init__(self, source: Source, blob: str, extents: list[Extent], chunk_size: int):
        self.extents = extents
        self.starts = [e.blob_off for e in extents]
        self.where = {(e.ino, e.chunk): e.blob_off for e in extents}
        # Opened before the mark: this descriptor never raises pre-content events.
        self.writer = os.open(blob, os.O_WRONLY | os.O_CLOEXEC)
        sizes = {e.ino: 0 for e in extents}
        for e in extents:
            sizes[e.ino] = max(sizes[e.ino], e.chunk * chunk_size + e.length)
        self.chunk_size = chunk_size
        self.cache = BlockCache(source, sizes, chunk_size, self._store)

    def _store(self, ino: int, offset: int, data: bytes) -> None:
        os.pwrite(self.writer, data, self.where[(ino, offset // self.chunk_size)])

    def handle(self, ev: fanotify.Event) -> int:
        """The response for one event (FAN_ALLOW, or FAN_DENY with EIO)."""
        if ev.offset < 0:
            return fanotify.FAN_ALLOW
        lo, hi = ev.offset, ev.offset + ev.count
        i = max(bisect.bisect_right(self.starts, lo) - 1, 0)
        try:
            while i < len(self.extents) and self.extents[i].blob_off < hi:
                e = self.extents[i]
                if e.blob_off + e.length > lo:
                    self.cache.ensure(e.ino, e.chunk * self.chunk_size, e.length)
                i += 1
        except FillError:
            return fanotify.deny_errno(errno.EIO)
        return fanotify.FAN_ALLOW


def serve(
    source: Source,
    mountpoint: str,
    state_dir: str,
    block_size: int,
    ready: Callable[[], None],
) -> None:
    work = os.path.join(state_dir, "erofs")
    os.makedirs(work, exist_ok=True)
    image, blob, extents = build_image(source, work, block_size)
    filler = Filler(source, blob, extents, block_size)
    group = fanotify.init()
    fanotify.mark(group, blob)
    mount_file(image, mountpoint, blob)
    stop_r, stop_w = os.pipe()
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_w, b"x"))
    signal.signal(signal.SIGINT, lambda *_: os.write(stop_w, b"x"))
    ready()
    pool = ThreadPoolExecutor(max_workers=16)
    lock = threading.Lock()

    def answer(ev: fanotify.Event) -> None:
        try:
            response = filler.handle(ev)
        except Exception:  # noqa: BLE001 - any bug must still answer, or the reader hangs
            response = fanotify.deny_errno(errno.EIO)
        with lock:
            fanotify.respond(group, ev.fd, response)
        os.close(ev.fd)

    try:
        while True:
            readable, _, _ = select.select([group, stop_r], [], [])
            if stop_r in readable:
                break
            for ev in fanotify.parse(os.read(group, 65536)):
                pool.submit(answer, ev)
    finally:
        try:
            umount(mountpoint)
        except OSError:
            umount(mountpoint, lazy=True)
        pool.shutdown(wait=True)
        os.close(group)
        os.close(filler.writer)
