"""Pieces on disk: one preallocated file a task, its bitfield, the finished blobs, LRU.

Layout under the cache dir::

    blobs/sha256/<hex>              finished, verified blobs (served whole or by piece)
    partial/<hex>/meta.json         {"size", "piece_length"} of a download in progress
    partial/<hex>/data              preallocated to the blob's size, written with pwrite
    partial/<hex>/bitfield          one bit a piece, piece 0 = high bit of byte 0

Crash safety: a piece's bytes are written and (``durable``) fdatasync'ed *before* its
bit is set on disk, so a peer killed mid-piece restarts without that bit and fetches
the piece again; it never trusts bytes it did not finish. The blob's sha256 is checked
once every piece is held; only then is the file renamed into ``blobs/`` (a mismatch
drops the download). Bits are written one byte at a time under a lock, so two pieces
finishing at once in two threads cannot lose each other's bit.

The cache is bounded by ``cache_size``: finished blobs are evicted least recently used
first (last access is kept as the file's mtime, so it survives a restart); a download
in progress and a blob being read or served (:meth:`PieceStore.using`) are never
evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import DigestMismatch, InvalidArgument, LaminaError, NotFound
from lamina.p2p import pieces

log = logging.getLogger(__name__)

_TASK = re.compile(r"^sha256:([0-9a-f]{64})$")
_READ = 1 << 20
_TOUCH_EVERY = 60.0
"""Seconds between mtime updates of one blob (a utime per read would be a write per read)."""


def task_hex(task: str) -> str:
    """The hex of a task id ``sha256:<hex>``; anything else is refused before it can
    become a path."""
    match = _TASK.match(task)
    if match is None:
        raise InvalidArgument(
            f"not a task id: {task[:80]!r}", hint="a task is a blob digest, sha256:<64 hex>"
        )
    return match.group(1)


class TaskFile:
    """One task on disk: a download in progress or a finished blob.

    In-memory state (``bits``, ``version``, the waiters) changes only on the event loop;
    disk writes happen in worker threads under ``_lock``.
    """

    def __init__(self, task: str, size: int, path: Path, *, complete: bool) -> None:
        self.task = task
        self.size = size
        self.piece_length = pieces.piece_length(size)
        self.count = pieces.piece_count(size, self.piece_length)
        self.path = path
        self.complete = complete
        self.bits = bytearray(
            b"\xff" * ((self.count + 7) // 8) if complete else (self.count + 7) // 8
        )
        self._trim()
        self.version = self.count if complete else 0
        self.error: LaminaError | None = None
        self.fd = -1
        self._disk_bits = bytearray(self.bits)
        self._bits_fd = -1
        self._lock = threading.Lock()
        self._changed = asyncio.Event()

    def _trim(self) -> None:
        # bits past the last piece stay 0, so a bitfield is the same on every peer
        spare = len(self.bits) * 8 - self.count
        if spare and self.bits:
            self.bits[-1] &= (0xFF << spare) & 0xFF

    # ---- reading state (event loop) ----

    def has(self, n: int) -> bool:
        return bool(self.bits[n >> 3] & (0x80 >> (n & 7)))

    def held(self) -> int:
        return sum(bin(b).count("1") for b in self.bits)

    def missing(self) -> list[int]:
        return [n for n in range(self.count) if not self.has(n)]

    def span(self, n: int) -> tuple[int, int]:
        return pieces.piece_span(self.size, n, self.piece_length)

    async def wait_newer(self, version: int, timeout: float) -> None:
        """Return once ``version`` has moved past ``version`` (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.version <= version and not self.complete and self.error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)

    async def wait_piece(self, n: int) -> None:
        """Return once piece ``n`` is held; raise the download's error if it failed."""
        while not self.has(n):
            if self.error is not None:
                raise self.error
            await self._changed.wait()

    def bump(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def fail(self, error: LaminaError) -> None:
        self.error = error
        self.bump()

    def mark(self, n: int) -> None:
        """Piece ``n`` is on disk (after :meth:`PieceStore.write_piece` or
        :meth:`persist_bit`): publish it to readers and the piece server."""
        self.bits[n >> 3] |= 0x80 >> (n & 7)
        self.bump()

    # ---- disk (worker threads) ----

    def open_reader(self) -> BinaryIO:
        """A file of the task's bytes for ``pread``/sendfile; the caller closes it.
        Raises ``FileNotFoundError`` if the blob was evicted."""
        with self._lock:
            if self.fd >= 0:
                return os.fdopen(os.dup(self.fd), "rb", buffering=0)
        return open(self.path, "rb", buffering=0)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self.fd < 0:
                raise NotFound(f"{self.task} is no longer being downloaded")
            os.pwrite(self.fd, data, offset)

    def persist_bit(self, n: int, durable: bool) -> bool:
        """Make piece ``n``'s bytes durable, then its bit; False if it was already held
        (an endgame duplicate that lost)."""
        with self._lock:
            if self.fd < 0 or self._disk_bits[n >> 3] & (0x80 >> (n & 7)):
                return False
            if durable:
                os.fdatasync(self.fd)
            self._disk_bits[n >> 3] |= 0x80 >> (n & 7)
            os.pwrite(self._bits_fd, self._disk_bits[n >> 3 : (n >> 3) + 1], n >> 3)
            if durable:
                os.fdatasync(self._bits_fd)
            return True

    def close_files(self) -> None:
        with self._lock:
            for fd in (self.fd, self._bits_fd):
                if fd >= 0:
                    os.close(fd)
            self.fd = self._bits_fd = -1


class PieceStore:
    """The cache dir: downloads in progress and finished blobs, bounded by
    ``cache_size`` bytes (``None``: unbounded)."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        cache_size: int | None = None,
        *,
        durable: bool = True,
    ) -> None:
        self.root = Path(cache_dir)
        self.cache_size = cache_size
        self.durable = durable
        self.on_evict: Callable[[str], None] | None = None
        """Called with a task id when its blob is evicted (the engine leaves the swarm)."""
        self._blobs = self.root / "blobs" / "sha256"
        self._partial = self.root / "partial"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._partial.mkdir(parents=True, exist_ok=True)
        self._active: dict[str, TaskFile] = {}
        self._users: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._access: dict[str, float] = {}
        self._touched: dict[str, float] = {}
        for path in self._blobs.iterdir():
            if _TASK.match(f"sha256:{path.name}"):
                st = path.stat()
                self._sizes[f"sha256:{path.name}"] = st.st_size
                self._access[f"sha256:{path.name}"] = st.st_mtime
            else:  # a stray temp file of a crash
                path.unlink(missing_ok=True)

    # ---- lookups ----

    def lookup(self, task: str) -> TaskFile | None:
        """The task's download in progress or finished blob, or None."""
        hexd = task_hex(task)
        if task in self._active:
            return self._active[task]
        if task in self._sizes:
            return TaskFile(task, self._sizes[task], self._blobs / hexd, complete=True)
        return None

    def has_blob(self, task: str) -> bool:
        return task_hex(task) is not None and task in self._sizes

    def blob_path(self, task: str) -> Path:
        return self._blobs / task_hex(task)

    def used_bytes(self) -> int:
        partial = sum(t.size for t in self._active.values() if not t.complete)
        return sum(self._sizes.values()) + partial

    @contextlib.contextmanager
    def using(self, task: str) -> Iterator[None]:
        """Hold ``task`` in the cache while it is read or served (no eviction); counts as
        an access for LRU."""
        self._users[task] = self._users.get(task, 0) + 1
        self.touch(task)
        try:
            yield
        finally:
            self._users[task] -= 1
            if not self._users[task]:
                del self._users[task]

    def touch(self, task: str) -> None:
        if task not in self._sizes:
            return
        now = time.time()
        self._access[task] = now
        if now - self._touched.get(task, 0.0) >= _TOUCH_EVERY:
            self._touched[task] = now
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.blob_path(task), (now, now))

    # ---- downloads ----

    def open_task(self, task: str, size: int) -> TaskFile:
        """Start (or resume after a restart) the download of ``task``: its file
        preallocated, its bitfield read back. Already open: the same TaskFile."""
        hexd = task_hex(task)
        if task in self._active:
            return self._active[task]
        if size < 0:
            raise InvalidArgument(f"negative blob size {size} for {task}")
        self.make_room(size)
        tf = TaskFile(task, size, self._partial / hexd / "data", complete=False)
        self._open_files(tf)
        self._active[task] = tf
        return tf

    def _open_files(self, tf: TaskFile) -> None:
        folder = tf.path.parent
        meta = {"size": tf.size, "piece_length": tf.piece_length}
        bits_path = folder / "bitfield"
        try:
            old = json.loads((folder / "meta.json").read_text())
            resumable = old == meta and bits_path.stat().st_size == len(tf.bits)
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "bitfield").write_bytes(bytes(len(tf.bits)))
            tmp = folder / "meta.json.tmp"
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, folder / "meta.json")
        tf.fd = os.open(tf.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(tf.fd).st_size != tf.size:
            os.ftruncate(tf.fd, tf.size)
            if tf.size:
                with contextlib.suppress(OSError):  # tmpfs and ext4 can; others may not
                    os.posix_fallocate(tf.fd, 0, tf.size)
        tf._bits_fd = os.open(bits_path, os.O_RDWR)
        disk = os.pread(tf._bits_fd, len(tf.bits), 0)
        tf.bits[:] = disk
        tf._trim()
        tf._disk_bits[:] = tf.bits
        if resumable and tf.held():
            log.info("resuming %s: %d of %d pieces on disk", tf.task, tf.held(), tf.count)

    def write_piece(self, tf: TaskFile, n: int, data: bytes | bytearray | memoryview) -> bool:
        """Write a verified piece and persist its bit (worker thread); then call
        ``tf.mark(n)`` on the loop. False if the piece was already there."""
        start, end = tf.span(n)
        if len(data) != end - start:
            raise InvalidArgument(
                f"piece {n} of {tf.task} has {len(data)} bytes, not {end - start}"
            )
        if tf._disk_bits[n >> 3] & (0x80 >> (n & 7)):
            return False
        tf.write_at(start, data)
        return tf.persist_bit(n, self.durable)

    def verify(self, tf: TaskFile, known: str | None = None) -> None:
        """Check the whole blob's sha256 (worker thread); ``known`` is a digest already
        computed while streaming (the back-to-source path), else the file is read."""
        want = task_hex(tf.task)
        got = known
        if got is None:
            hasher = hashlib.sha256()
            offset = 0
            while offset < tf.size:
                chunk = os.pread(tf.fd, min(_READ, tf.size - offset), offset)
                if not chunk:
                    break
                hasher.update(chunk)
                offset += len(chunk)
            got = hasher.hexdigest()
        if got != want:
            raise DigestMismatch(
                f"{tf.task}: the pieces add up to sha256:{got}",
                hint="the download was dropped; fetch the blob again",
            )
        if self.durable:
            os.fsync(tf.fd)
        os.rename(tf.path, self._blobs / want)
        if self.durable:
            dirfd = os.open(self._blobs, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        shutil.rmtree(tf.path.parent, ignore_errors=True)

    def completed(self, tf: TaskFile) -> None:
        """After :meth:`verify` (on the loop): the blob counts as cached."""
        tf.close_files()
        tf.path = self._blobs / task_hex(tf.task)
        tf.complete = True
        self._active.pop(tf.task, None)
        self._sizes[tf.task] = tf.size
        self._access[tf.task] = time.time()
        tf.bump()
        self.make_room(0)

    def drop(self, tf: TaskFile, error: LaminaError) -> None:
        """Give up a download (on the loop): waiters get ``error``, the file goes."""
        tf.close_files()
        tf.fail(error)
        if self._active.get(tf.task) is tf:
            del self._active[tf.task]
        shutil.rmtree(tf.path.parent, ignore_errors=True)

    def make_room(self, incoming: int) -> None:
        """Evict least recently used blobs until ``incoming`` more bytes fit (never a task
        in use or in progress; if those alone exceed the bound, the bound yields)."""
        if self.cache_size is None:
            return
        while self.used_bytes() + incoming > self.cache_size:
            idle = [t for t in self._sizes if t not in self._users and t not in self._active]
            if not idle:
                log.warning(
                    "cache over its bound (%d bytes in use, bound %d): every blob is in use",
                    self.used_bytes() + incoming,
                    self.cache_size,
                )
                return
            victim = min(idle, key=lambda t: self._access.get(t, 0.0))
            self.evict(victim)

    def evict(self, task: str) -> None:
        self.blob_path(task).unlink(missing_ok=True)
        self._sizes.pop(task, None)
        self._access.pop(task, None)
        self._touched.pop(task, None)
        log.info("evicted %s from the cache", task)
        if self.on_evict is not None:
            self.on_evict(task)

    def close(self) -> None:
        for tf in list(self._active.values()):
            tf.close_files()
        self._active.clear()
