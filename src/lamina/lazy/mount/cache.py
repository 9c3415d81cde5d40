"""Which blocks of which file are here, and filling the missing ones exactly once.

A block is ``block_size`` bytes of one file (the last one is short). The bitmap lives in
memory; the bytes live wherever the design keeps them (a sparse file per inode for FUSE,
the sparse blob for EROFS), written by the ``store`` callback. Fills run in the caller's
thread; a per-block lock makes concurrent readers of one block wait for a single fill.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from .api import Filler


class FillError(Exception):
    """fill raised or returned the wrong length; the reader gets EIO."""


class BlockCache:
    def __init__(
        self,
        filler: Filler,
        sizes: Mapping[int, int],
        block_size: int,
        store: Callable[[int, int, bytes], None],
    ) -> None:
        self.filler = filler
        self.sizes = sizes
        self.block_size = block_size
        self.store = store
        self._bits: dict[int, bytearray] = {}
        self._locks: dict[tuple[int, int], threading.Lock] = {}
        self._guard = threading.Lock()
        self.fills = 0

    def _bitmap(self, ino: int) -> bytearray:
        bits = self._bits.get(ino)
        if bits is None:
            nblocks = -(-self.sizes[ino] // self.block_size)
            bits = self._bits.setdefault(ino, bytearray(-(-nblocks // 8)))
        return bits

    def has(self, ino: int, block: int) -> bool:
        return bool(self._bitmap(ino)[block >> 3] & (1 << (block & 7)))

    def missing(self, ino: int, offset: int, length: int) -> list[int]:
        size = self.sizes[ino]
        end = min(offset + length, size)
        if end <= offset:
            return []
        first, last = offset // self.block_size, (end - 1) // self.block_size
        return [b for b in range(first, last + 1) if not self.has(ino, b)]

    def ensure(self, ino: int, offset: int, length: int) -> None:
        """Fill every missing block of the range; raise :class:`FillError` on failure."""
        for block in self.missing(ino, offset, length):
            with self._guard:
                lock = self._locks.setdefault((ino, block), threading.Lock())
            with lock:
                if self.has(ino, block):
                    continue  # another reader filled it while we waited
                start = block * self.block_size
                want = min(self.block_size, self.sizes[ino] - start)
                try:
                    data = self.filler.fill(ino, start, want)
                except Exception as exc:
                    raise FillError(f"fill({ino}, {start}, {want}): {exc}") from exc
                if len(data) != want:
                    raise FillError(f"fill({ino}, {start}, {want}) returned {len(data)} bytes")
                self.store(ino, start, data)
                self._bitmap(ino)[block >> 3] |= 1 << (block & 7)
                self.fills += 1
            with self._guard:
                self._locks.pop((ino, block), None)
