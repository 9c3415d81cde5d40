"""A streaming tar reader and a deterministic tar writer.

:func:`read_entries` reads a tar stream front to back without seeking (a pipe, a socket,
a decompressor) and yields ``(Entry, EntryReader)`` pairs. It never uses :mod:`tarfile`:
CPython's stream mode could loop forever at EOF, its PAX parser had a ReDoS and its
long-name reads were unbounded (research §4.1). Every cap in :class:`Limits` is enforced
here as the bytes arrive.

:class:`TarWriter` writes ustar headers (PAX when a field does not fit), the content,
padding to 512, and on :meth:`TarWriter.close` exactly two zero blocks (as Go's
archive/tar, not CPython's 10 KiB records). It hands its sink chunks of about 1 MiB, as
``bytes`` the sink may keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded
from lamina.layers.api import CHUNK, DEFAULT_LIMITS, Entry, EntryType, Limits, Readable
from lamina.layers.tar.blocks import (
    BLOCK_SIZE,
    EXTENDED_TYPES,
    GNU_LONGLINK,
    GNU_LONGNAME,
    PAX_GLOBAL,
    ZERO_BLOCK,
    cstr,
    padding,
)
from lamina.layers.tar.decode import build_entry, decode_header, parse_pax
from lamina.layers.tar.encode import encode_entry

_DIRECT_READ = 64 << 10  # readinto requests this big bypass the internal buffer


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _truncated(offset: int) -> InvalidFormat:
    return InvalidFormat(
        f"truncated tar (stream ended at offset {offset})",
        hint="the layer is incomplete; fetch it again",
    )


class _Source:
    """Exact reads over a stream that may return short reads, with a byte cap."""

    __slots__ = ("_buf", "_limit", "_off", "_readinto", "_stream", "offset", "total")

    def __init__(self, stream: Readable, limit: int) -> None:
        self._stream = stream
        self._readinto = getattr(stream, "readinto", None)
        self._buf = b""
        self._off = 0
        self._limit = limit
        self.offset = 0  # bytes handed out to the parser
        self.total = 0  # bytes taken from the stream

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self._limit:
            raise LimitExceeded(
                f"tar stream is over the {self._limit}-byte limit for one layer",
                hint="raise Limits.max_layer_bytes if this layer is genuine",
            )

    def _fill(self) -> bool:
        data = self._stream.read(CHUNK)
        if not data:
            return False
        self._count(len(data))
        self._buf = data
        self._off = 0
        return True

    def block(self) -> bytes | None:
        """The next 512-byte block; None at a clean EOF; truncated tar on a partial one."""
        off = self._off
        if len(self._buf) - off >= BLOCK_SIZE:
            self._off = off + BLOCK_SIZE
            self.offset += BLOCK_SIZE
            return self._buf[off : off + BLOCK_SIZE]
        if len(self._buf) == off and not self._fill():
            return None
        return self.exact(BLOCK_SIZE)

    def exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        need = n
        while need:
            avail = len(self._buf) - self._off
            if not avail:
                if not self._fill():
                    raise _truncated(self.offset)
                continue
            take = min(need, avail)
            parts.append(self._buf[self._off : self._off + take])
            self._off += take
            self.offset += take
            need -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def some(self, n: int) -> bytes:
        """Between 1 and n bytes (n > 0); truncated tar at EOF."""
        avail = len(self._buf) - self._off
        if not avail:
            if not self._fill():
                raise _truncated(self.offset)
            avail = len(self._buf)
        take = min(n, avail)
        out = self._buf[self._off : self._off + take]
        self._off += take
        self.offset += take
        return out

    def into(self, view: memoryview) -> int:
        """Fill 1..len(view) bytes of view; truncated tar at EOF."""
        avail = len(self._buf) - self._off
        if not avail and len(view) >= _DIRECT_READ and self._readinto is not None:
            got = self._readinto(view)
            if got:
                self._count(got)
                self.offset += got
                return int(got)
            raise _truncated(self.offset)
        if not avail:
            if not self._fill():
                raise _truncated(self.offset)
            avail = len(self._buf)
        take = min(len(view), avail)
        view[:take] = self._buf[self._off : self._off + take]
        self._off += take
        self.offset += take
        return take

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.some(min(n, CHUNK)))

    def drain(self) -> None:
        """Read to EOF, so a hash of the stream covers its trailing padding."""
        self.offset += len(self._buf) - self._off
        self._buf = b""
        self._off = 0
        while self._fill():
            self.offset += len(self._buf)
        self._buf = b""


class EntryReader:
    """The content of one entry. Valid only until the reader moves to the next entry."""

    __slots__ = ("_remaining", "_src", "_valid")

    def __init__(self, src: _Source, size: int) -> None:
        self._src = src
        self._remaining = size
        self._valid = True

    @property
    def remaining(self) -> int:
        return self._remaining

    def _check(self) -> None:
        if not self._valid:
            raise InvalidArgument("tar entry content read after the reader moved on")

    def read(self, n: int = -1) -> bytes:
        """Exactly min(n, remaining) bytes (all that remain when n < 0)."""
        self._check()
        want = self._remaining if n < 0 else min(n, self._remaining)
        if not want:
            return b""
        out = self._src.exact(want)
        self._remaining -= want
        return out

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Fill buf as far as the entry allows; 0 at the end of the entry."""
        self._check()
        view = memoryview(buf).cast("B")
        want = min(len(view), self._remaining)
        done = 0
        while done < want:
            done += self._src.into(view[done:want])
        self._remaining -= done
        return done

    def readable(self) -> bool:
        return True

    def _finish(self) -> None:
        self._valid = False
        if self._remaining:
            self._src.skip(self._remaining)
            self._remaining = 0


def read_entries(
    stream: BinaryIO | Readable, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[Entry, EntryReader]]:
    """Yield every entry of an uncompressed tar stream with a reader of its content.

    Later iterations skip what the caller left unread. The stream must end with the two
    zero blocks (after which it is read to EOF) or at a clean header boundary; any other
    EOF is ``InvalidFormat("truncated tar")``. Root directory entries are skipped.
    Duplicate names are yielded as they come (a later entry replaces an earlier one;
    that is the applier's business).
    """
    src = _Source(stream, limits.max_layer_bytes)
    cap = limits.max_header_bytes
    count = 0
    pax: dict[str, bytes] = {}
    longname: bytes | None = None
    longlink: bytes | None = None
    pending = 0  # bytes of extended headers waiting for their entry
    while True:
        offset = src.offset
        block = src.block()
        if block is None:
            if pending or pax or longname is not None or longlink is not None:
                raise _truncated(src.offset)
            return
        if block == ZERO_BLOCK:
            if pending or pax or longname is not None or longlink is not None:
                raise InvalidFormat(f"tar extended header at offset {offset} has no entry")
            second = src.block()
            if second is not None and second != ZERO_BLOCK:
                raise InvalidFormat(
                    f"corrupt tar: a lone zero block at offset {offset}",
                    hint="the layer is damaged",
                )
            src.drain()
            return
        hdr = decode_header(block, offset)
        if hdr.typeflag in EXTENDED_TYPES:
            pending += hdr.size
            if hdr.size > cap or pending > cap:
                raise LimitExceeded(
                    f"tar extended header at offset {offset} is over {cap} bytes",
                    hint="raise Limits.max_header_bytes if this layer is genuine",
                )
            data = src.exact(hdr.size)
            src.skip(padding(hdr.size))
            flag = hdr.typeflag
            if flag == GNU_LONGNAME:
                longname = cstr(data)
            elif flag == GNU_LONGLINK:
                longlink = cstr(data)
            elif flag == PAX_GLOBAL:
                parse_pax(data, offset)  # checked, then ignored (as Go does)
                pending -= hdr.size
            else:
                pax.update(parse_pax(data, offset))
            continue

        entry = build_entry(
            hdr, pax, longname=longname, longlink=longlink, limits=limits, offset=offset
        )
        size = 0 if entry is None else entry.size  # a skipped root is a dir: no data
        if pax:
            pax = {}
        longname = longlink = None
        pending = 0
        count += 1
        if count > limits.max_entries:
            raise LimitExceeded(
                f"tar stream has more than {limits.max_entries} entries",
                hint="raise Limits.max_entries if this layer is genuine",
            )
        if entry is None:
            src.skip(size + padding(size))
            continue
        reader = EntryReader(src, size)
        yield entry, reader
        reader._finish()
        src.skip(padding(size))


class TarWriter:
    """Writes a tar stream into ``sink`` (anything with ``write(bytes)``).

    ``add`` writes the header(s), exactly ``entry.size`` bytes of content and the
    padding; ``close`` writes the two zero end blocks and flushes, but leaves the sink
    open. The output is a pure function of the entries and contents given.
    """

    __slots__ = ("_buf", "_closed", "_n", "_sink", "_view", "bytes_written", "entries")

    def __init__(self, sink: Sink, *, chunk_size: int = CHUNK) -> None:
        self._sink = sink
        self._buf = bytearray(max(chunk_size, 16 * BLOCK_SIZE))
        self._view = memoryview(self._buf)
        self._n = 0
        self._closed = False
        self.bytes_written = 0  # total bytes handed to the sink so far
        self.entries = 0

    def _flush(self) -> None:
        if self._n:
            self._sink.write(bytes(self._view[: self._n]))
            self.bytes_written += self._n
            self._n = 0

    def _put(self, data: bytes) -> None:
        n = self._n
        end = n + len(data)
        if end <= len(self._buf):
            self._view[n:end] = data
            self._n = end
            return
        self._flush()
        if len(data) >= len(self._buf):
            self._sink.write(bytes(data))
            self.bytes_written += len(data)
        else:
            self._view[: len(data)] = data
            self._n = len(data)

    def add(self, entry: Entry, content: BinaryIO | Readable | None = None) -> None:
        """Append one entry. ``content`` must give at least ``entry.size`` bytes for a
        FILE (only that many are read); it is ignored for other types."""
        if self._closed:
            raise InvalidArgument("TarWriter.add after close")
        self._put(encode_entry(entry))
        self.entries += 1
        size = entry.size if entry.type is EntryType.FILE else 0
        if not size:
            return
        if content is None:
            raise InvalidArgument(f"tar entry {entry.name!r} has size {size} but no content")
        readinto = getattr(content, "readinto", None)
        remaining = size
        buf_len = len(self._buf)
        while remaining:
            if self._n == buf_len:
                self._flush()
            want = min(remaining, buf_len - self._n)
            if readinto is not None:
                got = readinto(self._view[self._n : self._n + want])
            else:
                data = content.read(want)
                got = len(data)
                self._view[self._n : self._n + got] = data
            if not got:
                raise InvalidArgument(
                    f"{entry.name!r} ended {remaining} bytes early (did it shrink while"
                    " being read?)",
                    hint="retry when nothing is writing to the tree",
                )
            self._n += got
            remaining -= got
        pad = padding(size)
        if pad:
            self._put(ZERO_BLOCK[:pad])

    def add_bytes(self, entry: Entry, data: bytes) -> None:
        if entry.type is EntryType.FILE and len(data) != entry.size:
            raise InvalidArgument(
                f"tar entry {entry.name!r} has size {entry.size} but {len(data)} bytes given"
            )
        if self._closed:
            raise InvalidArgument("TarWriter.add after close")
        self._put(encode_entry(entry))
        self.entries += 1
        if entry.type is EntryType.FILE and data:
            self._put(data)
            pad = padding(len(data))
            if pad:
                self._put(ZERO_BLOCK[:pad])

    def close(self) -> None:
        """Write the end of archive (two zero blocks) and flush. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._put(ZERO_BLOCK * 2)
        self._flush()
