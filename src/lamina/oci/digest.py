"""Content digests (image-spec descriptor.md, "Digests").

A digest is ``algorithm ":" encoded``. lamina registers sha256 (the default) and sha512;
the encoded part is lowercase hex of the exact length the algorithm gives. Digests are
validated on construction, so a :class:`Digest` is always safe to turn into a path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from lamina.errors import DigestMismatch, InvalidArgument

# algorithm -> length of the hex encoding
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_ENCODED = re.compile(r"[a-f0-9]+")


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A validated ``algorithm:encoded`` content digest."""

    algorithm: str
    encoded: str

    def __post_init__(self) -> None:
        want = ALGORITHMS.get(self.algorithm)
        if want is None:
            raise InvalidArgument(
                f"unsupported digest algorithm {self.algorithm!r}",
                hint="use sha256 or sha512",
            )
        if len(self.encoded) != want or not _ENCODED.fullmatch(self.encoded):
            raise InvalidArgument(f"invalid {self.algorithm} digest {self.encoded!r}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise InvalidArgument(
                f"invalid digest {text!r}", hint="a digest looks like sha256:<64 hex digits>"
            )
        return cls(algorithm, encoded)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, algorithm: str = "sha256") -> Digest:
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.hexdigest())

    @property
    def hex(self) -> str:
        return self.encoded

    def hasher(self) -> Hasher:
        return new_hasher(self.algorithm)

    def verify(self, data: bytes | memoryview) -> None:
        got = Digest.from_bytes(data, self.algorithm)
        if got != self:
            raise DigestMismatch(f"content has digest {got}, expected {self}")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def new_hasher(algorithm: str = "sha256") -> Hasher:
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


class Digester:
    """Streams bytes through a hash and counts them."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = new_hasher(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())
