"""Capped decompression of layer blobs: gzip and zstd, never trusted.

Decompression is hostile-input code. Every decoder here is driven with bounded output
per step, counts what goes in and what comes out, and stops a bomb (a layer over
``Limits.max_layer_bytes``, or over ``Limits.max_ratio`` once past 64 MiB) with
LimitExceeded. Corrupt, truncated or trailing-garbage streams are InvalidFormat; no
third-party exception leaves this module (CVE-2017-14992 was a gzip bomb in a layer).
"""

from __future__ import annotations

import zlib
from typing import IO, Any, BinaryIO, cast

import zstandard
from isal import isal_zlib

from lamina.errors import InvalidFormat, LimitExceeded
from lamina.layers.api import CHUNK, DEFAULT_LIMITS, Limits, Readable
from lamina.layers.chunked_reader import ChunkedReader
from lamina.layers.compression.detect import (
    GZIP_MAGIC,
    SUFFIXES,
    ZSTD_MAGIC,
    detect,
    is_skippable,
    unknown_compression,
)
from lamina.layers.tar.blocks import BLOCK_SIZE

RATIO_FLOOR = 64 << 20  # the ratio cap applies past this many decompressed bytes

# isal's stub types ``error`` as an instance; it is the exception class IsalError
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)


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
            elif is_skippable(hdr):
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
        raise unknown_compression(compression)
    return DecompressedStream(_Input(stream, head), compression, limits)
