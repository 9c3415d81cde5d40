"""The bootstrap being built: mutable inodes, names and chunk references.

The converter fills these while layers stream by; :func:`~.encode.encode_bootstrap`
turns them into bytes. A blob is named by a *key*: the :class:`Digest` of a blob that
already exists (a chunk found in an earlier lazy image), or an ``int`` slot for a blob
this conversion is still writing (its digest is known only at commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.lazy.format.layout import InodeType
from lamina.oci.digest import Digest

BlobKey = Digest | int
EMPTY_SHA256 = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@dataclass(slots=True, eq=False)
class ChunkRef:
    """One independently compressed chunk: where it sits, and the digest of its bytes."""

    digest: bytes  # sha256 of the uncompressed bytes
    blob: BlobKey
    offset: int  # of the compressed bytes in the blob
    csize: int
    usize: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Segment:
    """``length`` bytes of a file, at ``offset`` in ``chunk``'s uncompressed bytes."""

    chunk: ChunkRef
    offset: int
    length: int


@dataclass(slots=True, eq=False)
class Inode:
    type: InodeType
    mode: int = 0o755  # permission bits and setuid/setgid/sticky only
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    devmajor: int = 0
    devminor: int = 0
    link: bytes = b""  # a symlink's target
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    digest: bytes = EMPTY_SHA256  # sha256 of a file's content
    flags: int = 0


@dataclass(slots=True, eq=False)
class Node:
    """A name in the merged tree. Hardlinks are nodes sharing one :class:`Inode`."""

    inode: Inode
    children: dict[bytes, Node] | None = None  # a directory's entries
    layer: int = -1  # the layer whose entry made this node (-1: implicit)
    touched: int = -1  # the last layer that made something below this directory

    @property
    def is_dir(self) -> bool:
        return self.children is not None


def new_dir(mode: int = 0o755, layer: int = -1) -> Node:
    return Node(Inode(InodeType.DIR, mode=mode), {}, layer)
