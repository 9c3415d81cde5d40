"""Layer compression: parallel deterministic gzip, multi-threaded zstd, or none.

Compression is deterministic: the same input gives the same bytes whatever the thread
timing. Gzip splits the input in 1 MiB blocks and deflates them in a thread pool, each
primed with the 32 KiB before it and ended by a sync flush (the pigz technique), so two
cores are busy; ISA-L (python-isal) does levels 0-3, zlib levels 4-9.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Protocol

import zstandard
from isal import isal_zlib

from lamina.errors import InvalidArgument
from lamina.layers.compression.detect import unknown_compression

GZIP_DEFAULT_LEVEL: Final = 3  # ISA-L level 3; see bench/bench_compression.py
ZSTD_DEFAULT_LEVEL: Final = 3
GZIP_BLOCK: Final = 1 << 20
ZSTD_JOB_SIZE: Final = 4 << 20
_GZIP_WINDOW = 32 << 10


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Compressor(Protocol):
    kind: str

    @property
    def media_type_suffix(self) -> str: ...
    def write(self, data: bytes, /) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def _deflate(level: int, block: bytes, zdict: bytes, last: bool) -> tuple[bytes, int, int]:
    """One gzip block: raw deflate primed with zdict, byte-aligned by a sync flush."""
    mod: Any = isal_zlib if level <= 3 else zlib
    if zdict:
        c = mod.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = mod.compressobj(level, zlib.DEFLATED, -15, 9)
    out = c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return out, isal_zlib.crc32(block), len(block)


# RFC 1952 §2.3: magic, CM=8 (deflate), FLG=0, MTIME=0, XFL=0, OS=255 (unknown): no name,
# no time, nothing that depends on the host.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class GzipCompressor:
    """Parallel, deterministic gzip: a single member, blocks deflated in a thread pool."""

    kind = "gzip"
    media_type_suffix = "+gzip"

    def __init__(
        self,
        sink: Sink,
        level: int = GZIP_DEFAULT_LEVEL,
        threads: int | None = None,
        *,
        block_size: int = GZIP_BLOCK,
    ) -> None:
        # The output is a function of the input, the level and block_size only.
        if not 0 <= level <= 9:
            raise InvalidArgument(f"gzip level {level} is not in 0..9")
        if block_size < _GZIP_WINDOW:
            raise InvalidArgument(f"gzip block size {block_size} is under 32 KiB")
        self._block = block_size
        self._sink = sink
        self._level = level
        workers = threads or len(os.sched_getaffinity(0))
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="gzip")
        self._max_inflight = max(2 * workers, 2)
        self._inflight: deque[Future[tuple[bytes, int, int]]] = deque()
        self._pending = bytearray()
        self._dict = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        self._started = False  # the header goes out with the first block, from that thread

    def write(self, data: bytes) -> None:
        pending = self._pending
        pending += data
        block = self._block
        if len(pending) < block:
            return
        view = memoryview(pending)
        start = 0
        while len(pending) - start >= block:
            self._submit(bytes(view[start : start + block]), last=False)
            start += block
        view.release()
        del pending[:start]

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._inflight.append(self._pool.submit(_deflate, self._level, block, self._dict, last))
        self._dict = block[-_GZIP_WINDOW:]
        while len(self._inflight) > self._max_inflight:
            self._collect()

    def _collect(self) -> None:
        out, crc, n = self._inflight.popleft().result()
        self._crc = isal_zlib.crc32_combine(self._crc, crc, n) if self._size else crc
        self._size += n
        if not self._started:
            self._started = True
            out = _GZIP_HEADER + out
        self._sink.write(out)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(bytes(self._pending), last=True)
            self._pending = bytearray()
            while self._inflight:
                self._collect()
            self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._inflight.clear()


class ZstdCompressor:
    """zstd with its own worker threads (ZSTDMT); frames carry a content checksum."""

    kind = "zstd"
    media_type_suffix = "+zstd"

    def __init__(
        self, sink: Sink, level: int = ZSTD_DEFAULT_LEVEL, threads: int | None = None
    ) -> None:
        self._sink = sink
        # Always multi-threaded mode (at least one worker): its output depends on the job
        # size, never on the number of workers, so every machine writes the same bytes.
        # 4 MiB jobs keep ZSTDMT's buffers near 50 MB (the default, 8 MiB, near 100 MB)
        # for 0.3% more output.
        workers = len(os.sched_getaffinity(0)) if threads is None or threads < 1 else threads
        try:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=workers, job_size=ZSTD_JOB_SIZE, write_checksum=1
            )
            cctx = zstandard.ZstdCompressor(compression_params=params)
        except (zstandard.ZstdError, ValueError) as exc:
            raise InvalidArgument(f"bad zstd settings (level {level}): {exc}") from exc
        self._c = cctx.compressobj()
        self._closed = False

    def write(self, data: bytes) -> None:
        out = self._c.compress(data)
        if out:
            self._sink.write(out)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sink.write(self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))

    def abort(self) -> None:
        self._closed = True


class IdentityCompressor:
    kind = ""
    media_type_suffix = ""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes) -> None:
        self._sink.write(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def make_compressor(
    kind: str, sink: Sink, *, level: int | None = None, threads: int | None = None
) -> Compressor:
    """A compressor writing into ``sink``: ``"gzip"``, ``"zstd"`` or ``""`` (none).

    ``threads=None`` uses every CPU this process may run on. Call ``close`` to finish
    the stream (or ``abort`` to drop it); the sink itself is never closed.
    """
    if kind == "gzip":
        return GzipCompressor(sink, GZIP_DEFAULT_LEVEL if level is None else level, threads)
    if kind == "zstd":
        return ZstdCompressor(sink, ZSTD_DEFAULT_LEVEL if level is None else level, threads)
    if kind == "":
        return IdentityCompressor(sink)
    raise unknown_compression(kind)
