"""A read-only stream over chunks that a subclass produces one at a time.

Decompressors and verifiers yield data in chunks of their own size; this gives them the
file-like ``read``/``readinto`` that tar readers and ``shutil`` expect, without copying
a chunk more than once.
"""

from __future__ import annotations


class ChunkedReader:
    """Subclasses implement ``_fill``: set ``_buf`` (and ``_off = 0``) to the next chunk
    and return True, or return False at the end."""

    __slots__ = ("_buf", "_off")

    def __init__(self) -> None:
        self._buf = b""
        self._off = 0

    def _fill(self) -> bool:
        raise NotImplementedError  # abstract: every subclass defines where chunks come from

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if self._off >= len(self._buf) and not self._fill():
            return b""
        if n < 0:
            parts = [self._buf[self._off :]]
            while self._fill():
                parts.append(self._buf)
            self._buf, self._off = b"", 0
            return b"".join(parts)
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:
        view = memoryview(b).cast("B")
        if not len(view) or (self._off >= len(self._buf) and not self._fill()):
            return 0
        take = min(len(view), len(self._buf) - self._off)
        view[:take] = self._buf[self._off : self._off + take]
        self._off += take
        return take

    def readable(self) -> bool:
        return True
