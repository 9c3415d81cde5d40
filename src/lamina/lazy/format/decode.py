"""Bootstrap bytes -> :class:`Bootstrap`, validated once, then read in place.

Everything in a bootstrap may come from a hostile registry. :func:`load_bootstrap`
reads at most ``max_bytes`` (LimitExceeded past it), checks the trailer's SHA-256, that
the header's counts add up to exactly the bytes present (so no section is sized by a
number the file cannot back), and then every record: indices in range, heap strings in
bounds, names valid and sorted, the directory ranges tiling the dirents breadth first
(a tree: no cycles, every name in exactly one directory), segments inside their chunks
and adding up to the file size. After that the accessors trust the bytes: records are
decoded on demand with ``struct.unpack_from``, one Python object per call, never one
per inode up front.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from lamina.errors import InvalidFormat, LimitExceeded, NotFound
from lamina.lazy.format import layout as lay
from lamina.oci.digest import Digest

_HINT = "the lazy image's bootstrap is damaged or hostile; convert the image again"


@dataclass(frozen=True, slots=True)
class BlobEntry:
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    digest: Digest  # of the uncompressed bytes
    blob: int
    offset: int
    csize: int
    usize: int
    flags: int

    @property
    def raw(self) -> bool:
        return bool(self.flags & lay.CHUNK_RAW)


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    chunk: int
    offset: int  # in the chunk's uncompressed bytes
    length: int


@dataclass(frozen=True, slots=True)
class InodeEntry:
    index: int
    type: lay.InodeType
    flags: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    devmajor: int
    devminor: int
    nlink: int
    link: bytes
    xattr_first: int
    xattr_count: int
    span_first: int
    span_count: int
    digest: bytes

    @property
    def prefetch(self) -> bool:
        return bool(self.flags & lay.INODE_PREFETCH)


def _bad(what: str) -> InvalidFormat:
    return InvalidFormat(f"bootstrap is corrupt: {what}", hint=_HINT)


def read_capped(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read a whole stream, refusing (before allocating more) anything over the cap."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LimitExceeded(
            f"bootstrap is over {max_bytes} bytes",
            hint="a bootstrap this large is hostile; raise the cap only for a genuine image",
        )
    return data


def load_bootstrap(data: bytes, max_bytes: int = lay.DEFAULT_MAX_BOOTSTRAP_BYTES) -> Bootstrap:
    if len(data) > max_bytes:
        raise LimitExceeded(
            f"bootstrap has {len(data)} bytes, over the {max_bytes}-byte cap",
            hint="a bootstrap this large is hostile; raise the cap only for a genuine image",
        )
    return Bootstrap(data)


class Bootstrap:
    """A validated bootstrap. Inodes, dirents and chunks are numbered from 0; inode 0
    and dirent 0 are the root directory."""

    def __init__(self, data: bytes) -> None:
        if len(data) < lay.HEADER.size + lay.TRAILER_SIZE:
            raise _bad(f"truncated: {len(data)} bytes, less than a header")
        fields = lay.HEADER.unpack_from(data, 0)
        magic, version, _flags, chunk_size, total = fields[:5]
        if magic != lay.MAGIC:
            raise _bad("bad magic (not a lamina bootstrap)")
        if version != lay.VERSION:
            raise InvalidFormat(
                f"bootstrap version {version} is not supported (this lamina reads {lay.VERSION})",
                hint="upgrade lamina, or convert the image again with this one",
            )
        if total != len(data):
            raise _bad(f"truncated or padded: header says {total} bytes, got {len(data)}")
        if hashlib.sha256(data[: -lay.TRAILER_SIZE]).digest() != data[-lay.TRAILER_SIZE :]:
            raise _bad("checksum mismatch")
        if not (lay.MIN_CHUNK_SIZE <= chunk_size <= lay.MAX_CHUNK_SIZE) or (
            chunk_size & (chunk_size - 1)
        ):
            raise _bad(f"chunk size {chunk_size} is not a power of two in 4 KiB..16 MiB")
        self.data = data
        self.chunk_size: int = chunk_size
        (
            self.n_blobs,
            self.n_chunks,
            self.n_inodes,
            self.n_dirents,
            self.n_segments,
            self.n_xattrs,
            heap_size,
        ) = fields[5:]
        offset = lay.HEADER.size
        bases = []
        for count, record in (
            (self.n_blobs, lay.BLOB),
            (self.n_chunks, lay.CHUNK),
            (self.n_inodes, lay.INODE),
            (self.n_dirents, lay.DIRENT),
            (self.n_segments, lay.SEGMENT),
            (self.n_xattrs, lay.XATTR),
        ):
            bases.append(offset)
            offset += count * record.size
        self._blobs, self._chunks, self._inodes, self._dirents, self._segs, self._xattrs = bases
        self._heap = offset
        if offset + heap_size + lay.TRAILER_SIZE != len(data):
            raise _bad("section sizes do not add up to the file size")
        self._heap_end = offset + heap_size
        self.digest = Digest.from_bytes(data)
        self._validate()

    # ------------------------------------------------------------------ records

    def blob(self, i: int) -> BlobEntry:
        raw, size = lay.BLOB.unpack_from(self.data, self._blobs + i * lay.BLOB.size)
        return BlobEntry(Digest("sha256", raw.hex()), size)

    def blobs(self) -> list[BlobEntry]:
        return [self.blob(i) for i in range(self.n_blobs)]

    def chunk(self, i: int) -> ChunkEntry:
        raw, *rest = lay.CHUNK.unpack_from(self.data, self._chunks + i * lay.CHUNK.size)
        return ChunkEntry(Digest("sha256", raw.hex()), *rest)

    def inode(self, i: int) -> InodeEntry:
        f = lay.INODE.unpack_from(self.data, self._inodes + i * lay.INODE.size)
        link = self._string(f[10], f[11])
        return InodeEntry(
            i,
            lay.InodeType(f[0]),
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            link,
            f[12],
            f[13],
            f[14],
            f[15],
            f[16],
        )

    def _dirent(self, i: int) -> tuple[int, int, int, int]:
        parent, inode, at, length = lay.DIRENT.unpack_from(
            self.data, self._dirents + i * lay.DIRENT.size
        )
        return parent, inode, at, length

    def name(self, dirent: int) -> bytes:
        _, _, at, length = self._dirent(dirent)
        return self._string(at, length)

    def segments(self, inode: InodeEntry) -> list[SegmentEntry]:
        if inode.type is not lay.InodeType.FILE:
            return []
        base, size = self._segs, lay.SEGMENT.size
        return [
            SegmentEntry(*lay.SEGMENT.unpack_from(self.data, base + i * size))
            for i in range(inode.span_first, inode.span_first + inode.span_count)
        ]

    def xattrs(self, inode: InodeEntry) -> dict[bytes, bytes]:
        out = {}
        for i in range(inode.xattr_first, inode.xattr_first + inode.xattr_count):
            n_at, n_len, v_at, v_len = lay.XATTR.unpack_from(
                self.data, self._xattrs + i * lay.XATTR.size
            )
            out[self._string(n_at, n_len)] = self._string(v_at, v_len)
        return out

    def _string(self, at: int, length: int) -> bytes:
        start = self._heap + at
        return self.data[start : start + length]

    # ------------------------------------------------------------------ the tree

    def children(self, inode: InodeEntry) -> Iterator[tuple[bytes, int]]:
        """(name, inode index) of a directory's entries, sorted by name."""
        if inode.type is not lay.InodeType.DIR:
            return
        for d in range(inode.span_first, inode.span_first + inode.span_count):
            _, child, at, length = self._dirent(d)
            yield self._string(at, length), child

    def lookup(self, parent: InodeEntry, name: bytes) -> int | None:
        """The inode of ``name`` in the directory ``parent`` (binary search), or None."""
        if parent.type is not lay.InodeType.DIR:
            return None
        lo, hi = parent.span_first, parent.span_first + parent.span_count
        while lo < hi:
            mid = (lo + hi) // 2
            _, child, at, length = self._dirent(mid)
            got = self._string(at, length)
            if got == name:
                return int(child)
            if got < name:
                lo = mid + 1
            else:
                hi = mid
        return None

    def resolve(self, path: str | bytes) -> InodeEntry:
        """The inode at a clean relative path (symlinks are not followed)."""
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        node = self.inode(0)
        for part in raw.strip(b"/").split(b"/"):
            if not part:
                continue
            found = self.lookup(node, part)
            if found is None:
                raise NotFound(f"{raw.decode('utf-8', 'replace')!r} is not in the image")
            node = self.inode(found)
        return node

    def walk(self) -> Iterator[tuple[bytes, int]]:
        """(path, inode index) of every name but the root, breadth first. Hardlinked
        inodes appear once per name."""
        paths: list[bytes] = [b""]
        for d in range(1, self.n_dirents):
            parent, inode, at, length = self._dirent(d)
            prefix = paths[parent]
            path = prefix + b"/" + self._string(at, length) if prefix else self._string(at, length)
            paths.append(path)
            yield path, inode

    # ------------------------------------------------------------------ validation

    def _check_string(self, at: int, length: int, what: str) -> None:
        if self._heap + at + length > self._heap_end:
            raise _bad(f"{what} points past the string heap")

    def _validate(self) -> None:
        if self.n_inodes == 0 or self.n_dirents == 0:
            raise _bad("no root directory")
        for i in range(self.n_chunks):
            c = self.chunk(i)
            if c.blob >= self.n_blobs:
                raise _bad(f"chunk {i} names blob {c.blob} of {self.n_blobs}")
            if not (0 < c.usize <= lay.MAX_CHUNK_SIZE) or not (0 < c.csize <= c.usize):
                raise _bad(f"chunk {i} has sizes {c.csize}/{c.usize}")
            if c.offset + c.csize > self.blob(c.blob).size:
                raise _bad(f"chunk {i} lies past the end of its blob")
            if c.raw and c.csize != c.usize:
                raise _bad(f"raw chunk {i} has different sizes")
        dir_of: dict[int, int] = {}  # dir inode -> its one dirent
        for d in range(self.n_dirents):
            parent, inode, at, length = self._dirent(d)
            if inode >= self.n_inodes:
                raise _bad(f"name {d} points at inode {inode} of {self.n_inodes}")
            self._check_string(at, length, f"name {d}")
            if d == 0:
                if length or inode != 0 or parent != 0:
                    raise _bad("the first name is not the root")
                continue
            name = self._string(at, length)
            if (
                not name
                or length > lay.MAX_NAME_BYTES
                or b"/" in name
                or b"\0" in name
                or name in (b".", b"..")
            ):
                raise _bad(f"name {d} ({name!r}) is not a valid file name")
            if parent >= d:
                raise _bad(f"name {d} has parent {parent}, not laid out before it")
        expected_next = 1  # breadth first: the children ranges tile the dirents in order
        for d in range(self.n_dirents):
            _, index, _, _ = self._dirent(d)
            raw = lay.INODE.unpack_from(self.data, self._inodes + index * lay.INODE.size)
            if raw[0] != lay.InodeType.DIR:
                continue
            if index in dir_of:
                raise _bad(f"directory inode {index} has two names")
            dir_of[index] = d
            first, count = raw[14], raw[15]
            if first != expected_next or first + count > self.n_dirents:
                raise _bad(f"directory {d}'s entries are not where the layout puts them")
            previous = None
            for e in range(first, first + count):
                parent, _, at, length = self._dirent(e)
                if parent != d:
                    raise _bad(f"name {e} is listed in directory {d} but names {parent}")
                name = self._string(at, length)
                if previous is not None and name <= previous:
                    raise _bad(f"directory {d}'s names are not sorted and unique")
                previous = name
            expected_next = first + count
        if expected_next != self.n_dirents:
            raise _bad("some names are in no directory")
        if lay.INODE.unpack_from(self.data, self._inodes)[0] != lay.InodeType.DIR:
            raise _bad("inode 0 is not a directory")
        named = bytearray(self.n_inodes)
        for d in range(self.n_dirents):
            named[self._dirent(d)[1]] = 1
        if not all(named):
            raise _bad("an inode has no name")
        for i in range(self.n_inodes):
            self._validate_inode(i)

    def _validate_inode(self, i: int) -> None:
        f = lay.INODE.unpack_from(self.data, self._inodes + i * lay.INODE.size)
        try:
            kind = lay.InodeType(f[0])
        except ValueError:
            raise _bad(f"inode {i} has unknown type {f[0]}") from None
        if f[2] & ~0o7777:
            raise _bad(f"inode {i} has mode bits beyond 0o7777")
        link_at, link_len = f[10], f[11]
        self._check_string(link_at, link_len, f"inode {i}'s link")
        if kind is lay.InodeType.SYMLINK:
            if not (0 < link_len <= lay.MAX_LINK_BYTES) or b"\0" in self._string(link_at, link_len):
                raise _bad(f"symlink inode {i} has an invalid target")
        elif link_len:
            raise _bad(f"inode {i} is not a symlink but has a target")
        x_first, x_count = f[12], f[13]
        if x_first + x_count > self.n_xattrs:
            raise _bad(f"inode {i}'s xattrs lie past the table")
        previous = None
        for x in range(x_first, x_first + x_count):
            n_at, n_len, v_at, v_len = lay.XATTR.unpack_from(
                self.data, self._xattrs + x * lay.XATTR.size
            )
            self._check_string(n_at, n_len, f"inode {i}'s xattr name")
            self._check_string(v_at, v_len, f"inode {i}'s xattr value")
            name = self._string(n_at, n_len)
            if not (0 < n_len <= lay.MAX_XATTR_NAME) or v_len > lay.MAX_XATTR_VALUE:
                raise _bad(f"inode {i} has an xattr over the kernel's limits")
            if b"\0" in name or (previous is not None and name <= previous):
                raise _bad(f"inode {i}'s xattrs are not valid, sorted and unique")
            previous = name
        if kind is lay.InodeType.FILE:
            first, count, size = f[14], f[15], f[6]
            if first + count > self.n_segments:
                raise _bad(f"inode {i}'s segments lie past the table")
            total = 0
            for s in range(first, first + count):
                chunk, offset, length = lay.SEGMENT.unpack_from(
                    self.data, self._segs + s * lay.SEGMENT.size
                )
                if chunk >= self.n_chunks or length == 0:
                    raise _bad(f"segment {s} of inode {i} is invalid")
                usize = lay.CHUNK.unpack_from(self.data, self._chunks + chunk * lay.CHUNK.size)[4]
                if offset + length > usize:
                    raise _bad(f"segment {s} of inode {i} lies past its chunk")
                total += length
            if total != size:
                raise _bad(f"inode {i}'s segments hold {total} bytes, its size is {size}")
        elif kind is lay.InodeType.SYMLINK:
            if f[6] != link_len or f[15]:
                raise _bad(f"symlink inode {i} has size {f[6]} or segments")
        elif kind is not lay.InodeType.DIR and (f[6] or f[15]):
            raise _bad(f"inode {i} is not a file but has a size or segments")
