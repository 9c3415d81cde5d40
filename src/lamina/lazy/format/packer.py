"""File contents -> chunks in data blobs, deduplicated, small files batched.

A file of ``chunk_size`` bytes or more is cut into ``chunk_size`` pieces (the last may
be shorter), each its own chunk. A smaller file is appended to the slot's open *batch*
chunk (flushed when the next file would not fit), so a directory of small files costs
one request, not one each; a small file never straddles two chunks. Before anything is
stored it is looked up by digest: a piece whose SHA-256 names a known chunk, or a small
file whose content digest names a known segment, is referenced instead (known = made
earlier in this conversion, or found in earlier lazy images: :class:`KnownChunks`).

Memory is one chunk of input and one of output per call, whatever the file size. The
compressed bytes go to the slot's sink as soon as they exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from lamina.errors import InvalidFormat
from lamina.lazy.format.chunks import DEFAULT_LEVEL, ChunkCompressor
from lamina.lazy.format.model import ChunkRef, Inode, Segment


class ChunkSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(slots=True)
class KnownChunks:
    """Chunks that may be referenced instead of stored: by chunk digest, and (for files
    held in one segment) by the digest of the whole file."""

    chunks: dict[bytes, ChunkRef] = field(default_factory=dict)
    files: dict[bytes, Segment] = field(default_factory=dict)


@dataclass(slots=True)
class PackStats:
    file_bytes: int = 0  # content bytes of every file seen
    stored_chunks: int = 0
    stored_bytes: int = 0  # compressed bytes written
    reused_chunks: int = 0  # pieces and small files referenced instead of stored
    reused_bytes: int = 0  # their uncompressed bytes


class _Slot:
    __slots__ = ("batch", "batch_ref", "offset", "sink")

    def __init__(self, sink: ChunkSink) -> None:
        self.sink = sink
        self.offset = 0
        self.batch = bytearray()
        self.batch_ref: ChunkRef | None = None


def _read_exact(stream: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left:
        data = stream.read(left)
        if not data:
            raise InvalidFormat(f"file content ended {left} bytes early")
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Packer:
    def __init__(
        self,
        sinks: dict[int, ChunkSink],
        chunk_size: int,
        known: KnownChunks | None = None,
        level: int = DEFAULT_LEVEL,
    ) -> None:
        self._slots = {key: _Slot(sink) for key, sink in sinks.items()}
        self.chunk_size = chunk_size
        self.known = known or KnownChunks()
        self._compressor = ChunkCompressor(level)
        self.stats = PackStats()

    def blob_size(self, slot: int) -> int:
        return self._slots[slot].offset

    def add_file(self, inode: Inode, size: int, stream: Readable, slot: int) -> None:
        """Read ``size`` bytes of content and set the inode's size, digest, segments."""
        inode.size = size
        inode.segments = []
        self.stats.file_bytes += size
        if size == 0:
            inode.digest = hashlib.sha256().digest()
            return
        if size < self.chunk_size:
            data = _read_exact(stream, size)
            inode.digest = hashlib.sha256(data).digest()
            inode.segments.append(self._small(data, inode.digest, slot))
            return
        whole = hashlib.sha256()
        left = size
        while left:
            piece = _read_exact(stream, min(left, self.chunk_size))
            left -= len(piece)
            whole.update(piece)
            digest = hashlib.sha256(piece).digest()
            ref = self.known.chunks.get(digest)
            if ref is None:
                ref = self._store(self._slots[slot], slot, piece, digest)
            else:
                self.stats.reused_chunks += 1
                self.stats.reused_bytes += len(piece)
            inode.segments.append(Segment(ref, 0, len(piece)))
        inode.digest = whole.digest()

    def _small(self, data: bytes, digest: bytes, slot: int) -> Segment:
        seg = self.known.files.get(digest)
        if seg is None:
            ref = self.known.chunks.get(digest)  # the same bytes stored as a whole chunk
            if ref is not None:
                seg = Segment(ref, 0, len(data))
        if seg is not None:
            self.stats.reused_chunks += 1
            self.stats.reused_bytes += len(data)
            return seg
        s = self._slots[slot]
        if s.batch_ref is not None and len(s.batch) + len(data) > self.chunk_size:
            self._flush(s)
        if s.batch_ref is None:
            s.batch_ref = ChunkRef(b"", slot, 0, 0, 0)  # filled in when the batch is flushed
        seg = Segment(s.batch_ref, len(s.batch), len(data))
        s.batch += data
        self.known.files[digest] = seg
        return seg

    def _store(self, s: _Slot, slot: int, data: bytes, digest: bytes) -> ChunkRef:
        payload, flags = self._compressor.compress(data)
        s.sink.write(payload)
        ref = ChunkRef(digest, slot, s.offset, len(payload), len(data), flags)
        s.offset += len(payload)
        self.known.chunks[digest] = ref
        self.stats.stored_chunks += 1
        self.stats.stored_bytes += len(payload)
        return ref

    def _flush(self, s: _Slot) -> None:
        ref = s.batch_ref
        if ref is None:
            return
        data = bytes(s.batch)
        payload, flags = self._compressor.compress(data)
        s.sink.write(payload)
        ref.digest = hashlib.sha256(data).digest()
        ref.offset, ref.csize, ref.usize, ref.flags = s.offset, len(payload), len(data), flags
        s.offset += len(payload)
        self.known.chunks.setdefault(ref.digest, ref)
        self.stats.stored_chunks += 1
        self.stats.stored_bytes += len(payload)
        s.batch = bytearray()
        s.batch_ref = None

    def finish(self) -> None:
        """Flush every open batch; call before the sinks are committed."""
        for s in self._slots.values():
            self._flush(s)
