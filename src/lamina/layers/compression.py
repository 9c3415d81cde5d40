"""Layer compression: detection, capped decompression, and parallel deterministic gzip.

Decompression is hostile-input code. Every decoder here is driven with bounded output
per step, counts what goes in and what comes out, and stops a bomb (a layer over
``Limits.max_layer_bytes``, or over ``Limits.max_ratio`` once past 64 MiB) with
LimitExceeded. Corrupt, truncated or trailing-garbage streams are InvalidFormat; no
third-party exception leaves this module (CVE-2017-14992 was a gzip bomb in a layer).

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
from typing import IO, Any, BinaryIO, Final, Protocol, cast

import zstandard
from isal import isal_zlib

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsupported
from lamina.layers.api import DEFAULT_LIMITS, Limits, Readable
from lamina.layers.chunked_reader import ChunkedReader
from lamina.layers.tar.blocks import BLOCK_SIZE, ZERO_BLOCK
from lamina.layers.tar.decode import decode_header

CHUNK = 1 << 20
RATIO_FLOOR = 64 << 20  # the ratio cap applies past this many decompressed bytes
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"

GZIP_DEFAULT_LEVEL: Final = 3  # ISA-L level 3; see bench/bench_compression.py
ZSTD_DEFAULT_LEVEL: Final = 3
GZIP_BLOCK: Final = 1 << 20
ZSTD_JOB_SIZE: Final = 4 << 20
_GZIP_WINDOW = 32 << 10

# isal's stub types ``error`` as an instance; it is the exception class IsalError
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)

SUFFIXES = {"": "", "gzip": "+gzip", "zstd": "+zstd"}


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def media_type_suffix(kind: str) -> str:
    """The layer media-type suffix for a compression: ``+gzip``, ``+zstd`` or ``""``."""
    try:
        return SUFFIXES[kind]
    except KeyError:
        raise Unsupported(f"unknown compression {kind!r}", hint="use gzip, zstd or none") from None


# --------------------------------------------------------------------------- detection


def detect(head: bytes) -> str:
    """The compression of a layer from its first bytes (512 or more for plain tar)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or _is_skippable(head):
        return "zstd"
    if head.startswith(_BZIP2_MAGIC):
        raise Unsupported(
            "bzip2-compressed layers are not supported",
            hint="recompress the layer with gzip or zstd",
        )
    if head.startswith(_XZ_MAGIC):
        raise Unsupported(
            "xz-compressed layers are not supported", hint="recompress the layer with gzip or zstd"
        )
    if head.startswith(_LZ4_MAGIC):
        raise Unsupported(
            "lz4-compressed layers are not supported",
            hint="recompress the layer with gzip or zstd",
        )
    if not head or head[:BLOCK_SIZE] == ZERO_BLOCK[: len(head)]:
        return ""  # empty, or an empty tar (end blocks only)
    if head[257:262] == b"ustar":
        return ""
    if len(head) >= BLOCK_SIZE:
        try:
            decode_header(head[:BLOCK_SIZE])
        except InvalidArgument:
            pass
        else:
            return ""  # a v7 header with a valid checksum
    raise InvalidFormat(
        "layer is neither a tar nor gzip or zstd data",
        hint="the blob is damaged or is not a layer",
    )


def _is_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


# --------------------------------------------------------------------------- decompression


class _Input:
    """The compressed side: ``head`` first, then the stream; counts bytes."""

    __slots__ = ("_head", "_stream", "count", "eof", "hook")

    def __init__(self, stream: Readable, head: bytes = b"") -> None:
        self._stream = stream
        self._head = head
        self.count = 0
        self.eof = False
        self.hook: Any = None

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._stream.read(CHUNK if n < 0 else n)
        if data:
            self.count += len(data)
            if self.hook is not None:
                self.hook(data)
        else:
            self.eof = True
        return data


def _peek(stream: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class _Gzip:
    """Multi-member gzip (RFC 1952 §2.2) with CRC32 and ISIZE checked per member."""

    __slots__ = ("_d", "_members", "_pending", "_src")

    def __init__(self, src: _Input) -> None:
        self._src = src
        self._d: Any = None
        self._pending = b""
        self._members = 0

    def next_chunk(self) -> bytes:
        while True:
            d = self._d
            if d is None:
                if len(self._pending) < 2:
                    more = self._src.read(CHUNK)
                    if not more and not self._pending:
                        if not self._members:
                            raise InvalidFormat("empty gzip stream", hint="the layer is empty")
                        return b""
                    self._pending += more
                    if len(self._pending) < 2:
                        raise InvalidFormat("trailing garbage after gzip stream")
                if not self._pending.startswith(GZIP_MAGIC):
                    what = "trailing garbage after" if self._members else "not"
                    raise InvalidFormat(
                        f"{what} gzip stream at byte {self._src.count - len(self._pending)}",
                        hint="the layer is damaged",
                    )
                d = self._d = isal_zlib.decompressobj(16 + 15)
                self._members += 1
            data = d.unconsumed_tail or self._pending
            self._pending = b""
            if not data:
                data = self._src.read(CHUNK)
            try:
                out: bytes = d.decompress(data, CHUNK)
            except (_ISAL_ERROR, zlib.error) as exc:
                raise InvalidFormat(
                    f"corrupt gzip stream: {exc}", hint="the layer is damaged"
                ) from exc
            if d.eof:
                self._pending = d.unused_data
                self._d = None
            if out:
                return out
            if not data and not d.eof:
                raise InvalidFormat("truncated gzip stream", hint="the layer is incomplete")


class _ZstdFrames:
    """Follows zstd frame and block headers (RFC 8878 §3.1) as the bytes go by.

    python-zstandard's stream reader ends silently on a truncated frame; this walker
    says whether the stream stopped at a frame boundary, and refuses a window over the
    limit before the decoder allocates it.
    """

    __slots__ = (
        "_checksum",
        "_fcs_did",
        "_hdr",
        "_max_window",
        "_single",
        "_skip",
        "_state",
        "_want",
        "frames",
    )

    def __init__(self, max_window: int) -> None:
        self._max_window = max_window
        self._state = "magic"
        self._want = 4
        self._hdr = bytearray()
        self._skip = 0
        self._checksum = False
        self._single = False
        self._fcs_did = (0, 0)
        self.frames = 0

    @property
    def at_boundary(self) -> bool:
        return self._state == "magic" and not self._hdr and not self._skip

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._want - len(self._hdr), end - pos)
            self._hdr += data[pos : pos + take]
            pos += take
            if len(self._hdr) == self._want:
                hdr = bytes(self._hdr)
                self._hdr.clear()
                self._advance(hdr)

    def _advance(self, hdr: bytes) -> None:
        state = self._state
        if state == "magic":
            if hdr == ZSTD_MAGIC:
                self.frames += 1
                self._state, self._want = "fhd", 1
            elif _is_skippable(hdr):
                self.frames += 1
                self._state, self._want = "skippable", 4
            else:
                raise InvalidFormat(
                    "trailing garbage after zstd stream" if self.frames else "not a zstd stream",
                    hint="the layer is damaged",
                )
        elif state == "skippable":
            self._skip = int.from_bytes(hdr, "little")
            self._state, self._want = "magic", 4
        elif state == "fhd":
            fhd = hdr[0]
            if fhd & 0x08:
                raise InvalidFormat("corrupt zstd frame header (reserved bit set)")
            single = bool(fhd & 0x20)
            fcs = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
            self._checksum = bool(fhd & 0x04)
            did = (0, 1, 2, 4)[fhd & 0x03]
            self._state = "fhrest"
            self._want = (0 if single else 1) + did + fcs
            self._single = single
            self._fcs_did = (fcs, did)
            if not self._want:  # nothing else in the header (single segment, no size)
                self._state, self._want = "block", 3
        elif state == "fhrest":
            self._check_window(hdr)
            self._state, self._want = "block", 3
        elif state == "block":
            bh = int.from_bytes(hdr, "little")
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                raise InvalidFormat("corrupt zstd block (reserved block type)")
            self._skip = 1 if btype == 1 else bsize
            if last:
                self._state, self._want = "magic", 4
                if self._checksum:
                    self._skip += 4

    def _check_window(self, rest: bytes) -> None:
        fcs, did = self._fcs_did
        if self._single:
            window = int.from_bytes(rest[did : did + fcs], "little") + (256 if fcs == 2 else 0)
        else:
            wd = rest[0]
            base = 1 << (10 + (wd >> 3))
            window = base + (base >> 3) * (wd & 7)
        if window > self._max_window:
            raise LimitExceeded(
                f"zstd frame needs a {window}-byte window, over the {self._max_window} limit",
                hint="raise Limits.zstd_max_window_log if this layer is genuine",
            )


class _Zstd:
    __slots__ = ("_frames", "_reader", "_src")

    def __init__(self, src: _Input, limits: Limits) -> None:
        max_window = 1 << limits.zstd_max_window_log
        self._src = src
        self._frames = _ZstdFrames(max_window)
        src.hook = self._frames.feed
        dctx = zstandard.ZstdDecompressor(max_window_size=max_window)
        self._reader = dctx.stream_reader(
            cast("IO[bytes]", src), read_size=CHUNK, read_across_frames=True, closefd=False
        )

    def next_chunk(self) -> bytes:
        try:
            out: bytes = self._reader.read(CHUNK)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise LimitExceeded(
                    f"zstd frame window is over the limit: {exc}",
                    hint="raise Limits.zstd_max_window_log if this layer is genuine",
                ) from exc
            raise InvalidFormat(f"corrupt zstd stream: {exc}", hint="the layer is damaged") from exc
        if out:
            return out
        if not self._src.eof and self._src.read(CHUNK):
            raise InvalidFormat("trailing garbage after zstd stream")
        if not self._src.count:
            raise InvalidFormat("empty zstd stream", hint="the layer is empty")
        if not self._frames.frames or not self._frames.at_boundary:
            raise InvalidFormat("truncated zstd stream", hint="the layer is incomplete")
        return b""


class _Plain:
    __slots__ = ("_src",)

    def __init__(self, src: _Input) -> None:
        self._src = src

    def next_chunk(self) -> bytes:
        return self._src.read(CHUNK)


class DecompressedStream(ChunkedReader):
    """A read-only stream of the decompressed layer, with the caps enforced."""

    __slots__ = (
        "_decoder",
        "_eof",
        "_limits",
        "_src",
        "decompressed_bytes",
        "kind",
    )

    def __init__(self, src: _Input, kind: str, limits: Limits) -> None:
        super().__init__()
        self._src = src
        self.kind = kind  # "gzip", "zstd" or "" (plain tar)
        self._limits = limits
        self._decoder: _Gzip | _Zstd | _Plain
        if kind == "gzip":
            self._decoder = _Gzip(src)
        elif kind == "zstd":
            self._decoder = _Zstd(src, limits)
        else:
            self._decoder = _Plain(src)
        self._eof = False
        self.decompressed_bytes = 0

    @property
    def compressed_bytes(self) -> int:
        return self._src.count

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._decoder.next_chunk()
        if not chunk:
            self._eof = True
            return False
        n = self.decompressed_bytes = self.decompressed_bytes + len(chunk)
        limits = self._limits
        if n > limits.max_layer_bytes:
            raise LimitExceeded(
                f"layer decompresses to over {limits.max_layer_bytes} bytes",
                hint="raise Limits.max_layer_bytes if this layer is genuine",
            )
        if n > RATIO_FLOOR and n > limits.max_ratio * max(self._src.count, 1):
            raise LimitExceeded(
                f"decompression bomb: {self._src.count} compressed bytes gave {n}"
                f" (ratio over {limits.max_ratio})",
                hint="do not use this image",
            )
        self._buf = chunk
        self._off = 0
        return True

    def close(self) -> None:
        self._buf = b""
        self._eof = True


def open_decompressed(
    stream: BinaryIO | Readable, compression: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> DecompressedStream:
    """A decompressing view of ``stream``; ``compression=None`` detects it from the first
    bytes (works on pipes: nothing is seeked). ``""`` means a plain tar."""
    head = b""
    if compression is None:
        head = _peek(stream, BLOCK_SIZE)
        compression = detect(head)
    if compression not in SUFFIXES:
        raise Unsupported(f"unknown compression {compression!r}", hint="use gzip, zstd or none")
    return DecompressedStream(_Input(stream, head), compression, limits)


# --------------------------------------------------------------------------- compression


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
    raise Unsupported(f"unknown compression {kind!r}", hint="use gzip, zstd or none")
