"""Verified reads: a raw reader that hashes what it hands out and checks it at the end.

The reader knows the size it expects (the descriptor's, or the file's), so it checks
size and digest the moment the last expected byte is read, before returning it, even if
the consumer never asks for EOF (tar readers stop at the end-of-archive blocks). It then
probes for one extra byte, so a blob longer than its descriptor fails too. Once a check
has failed every later read raises the same error.

It is an :class:`io.RawIOBase` (and a ``typing.BinaryIO``), so it can be wrapped in
:class:`io.BufferedReader`; its
``read(n)`` loops until ``n`` bytes or the end, as file consumers expect. It offers no
``fileno`` and no ``seek``: either would let a consumer bypass the check.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from lamina.errors import DigestMismatch, IntegrityError, SizeMismatch
from lamina.oci.digest import Digest, Hasher

CHUNK = 1 << 20
DAMAGED_HINT = "the stored copy is damaged: delete the blob, then pull or import it again"


class VerifyingReader(io.RawIOBase, BinaryIO):
    def __init__(self, fd: int, digest: Digest, size: int, name: str = "") -> None:
        super().__init__()
        self._fd = fd
        self._digest = digest
        self._size = size
        self._pos = 0
        self._hasher: Hasher = digest.hasher()
        self._verified = False
        self._error: IntegrityError | None = None
        self._name = name or str(digest)

    @property
    def name(self) -> str:
        return self._name

    @property
    def mode(self) -> str:
        return "rb"

    @property
    def digest(self) -> Digest:
        return self._digest

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed blob reader")
        if self._error is not None:
            raise self._error
        view = memoryview(buffer).cast("B")
        if self._verified or not len(view):
            return 0
        remaining = self._size - self._pos
        if remaining == 0:
            self._finish()
            return 0
        n = os.readv(self._fd, [view[: min(len(view), remaining)]])
        if n == 0:
            self._fail(
                SizeMismatch(
                    f"blob {self._digest} ends after {self._pos} bytes, expected {self._size}",
                    hint=DAMAGED_HINT,
                )
            )
        self._hasher.update(view[:n])
        self._pos += n
        if self._pos == self._size:
            self._finish()
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.readinto(view[got:])
            if n == 0:
                break
            got += n
        view.release()
        del buf[got:]
        return bytes(buf)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = self.read(min(CHUNK, max(self._size - self._pos, 1)))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def _finish(self) -> None:
        if self._verified:
            return
        # image-spec descriptor.md: content MUST match size and digest; longer is wrong too.
        if os.read(self._fd, 1):
            self._fail(
                SizeMismatch(
                    f"blob {self._digest} is longer than the expected {self._size} bytes",
                    hint=DAMAGED_HINT,
                )
            )
        got = self._hasher.hexdigest()
        if got != self._digest.encoded:
            self._fail(
                DigestMismatch(
                    f"blob {self._digest} has content digest {self._digest.algorithm}:{got}",
                    hint=DAMAGED_HINT,
                )
            )
        self._verified = True

    def _fail(self, error: IntegrityError) -> None:
        self._error = error
        raise error

    @property
    def verified(self) -> bool:
        """True once every byte has been read and matched size and digest."""
        return self._verified

    def close(self) -> None:
        if not self.closed:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            finally:
                super().close()
