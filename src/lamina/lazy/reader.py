"""Read a byte range of a file in a lazy image: plan the chunks it needs, fetch runs of
adjacent chunks with one request each, verify and decompress each chunk, slice.

Nothing unverified is returned: :func:`~.format.chunks.decode_chunk` raises
DigestMismatch for a chunk whose bytes are not the bootstrap's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lamina.errors import SizeMismatch
from lamina.lazy.api import ChunkFetcher
from lamina.lazy.format.chunks import decode_chunk
from lamina.lazy.format.decode import Bootstrap, InodeEntry

MAX_MERGED = 4 << 20  # one request covers adjacent chunks up to this many bytes


@dataclass(frozen=True, slots=True)
class FetchRun:
    """Adjacent chunks of one blob, fetched with one request."""

    blob: int
    offset: int
    length: int
    chunks: tuple[int, ...]


def plan_runs(boot: Bootstrap, chunks: list[int], max_merged: int = MAX_MERGED) -> list[FetchRun]:
    """Group chunk indices into runs of contiguous compressed bytes of one blob."""
    entries = sorted(
        {c: boot.chunk(c) for c in chunks}.items(), key=lambda kv: (kv[1].blob, kv[1].offset)
    )
    runs: list[FetchRun] = []
    for index, c in entries:
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.blob == c.blob
            and last.offset + last.length == c.offset
            and last.length + c.csize <= max_merged
        ):
            runs[-1] = FetchRun(
                last.blob, last.offset, last.length + c.csize, (*last.chunks, index)
            )
        else:
            runs.append(FetchRun(c.blob, c.offset, c.csize, (index,)))
    return runs


class LazyReader:
    def __init__(self, boot: Bootstrap, fetcher: ChunkFetcher) -> None:
        self.boot = boot
        self.fetcher = fetcher

    async def chunks(self, indices: list[int]) -> dict[int, bytes]:
        """The verified uncompressed bytes of each chunk."""
        out: dict[int, bytes] = {}
        for run in plan_runs(self.boot, indices):
            data = await self.fetcher.fetch(self.boot.blob(run.blob).digest, run.offset, run.length)
            if len(data) != run.length:
                raise SizeMismatch(f"fetched {len(data)} bytes of a {run.length}-byte range")
            for index in run.chunks:
                c = self.boot.chunk(index)
                start = c.offset - run.offset
                out[index] = await asyncio.to_thread(decode_chunk, data[start : start + c.csize], c)
        return out

    async def read(self, inode: InodeEntry, offset: int = 0, size: int = -1) -> bytes:
        end = inode.size if size < 0 else min(inode.size, offset + size)
        wanted: list[tuple[int, int, int]] = []  # (chunk, start in chunk, stop in chunk)
        pos = 0
        for seg in self.boot.segments(inode):
            lo, hi = max(offset, pos), min(end, pos + seg.length)
            if lo < hi:
                wanted.append((seg.chunk, seg.offset + lo - pos, seg.offset + hi - pos))
            pos += seg.length
        data = await self.chunks([w[0] for w in wanted])
        return b"".join(data[c][a:b] for c, a, b in wanted)
