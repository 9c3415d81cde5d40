"""The merged tree -> bootstrap bytes (layout v1, :mod:`.layout`).

Deterministic: names are sorted (bytewise) within each directory and the directories
are laid out breadth first, inodes numbered by their first name, chunks by their first
use in inode order, blobs by their first use in chunk order, heap strings interned.
The same tree and chunk placement always give the same bytes, so the same image
converts to the same digest.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable

from lamina.errors import InvalidArgument, LimitExceeded
from lamina.lazy.format import layout as lay
from lamina.lazy.format.model import BlobKey, ChunkRef, Inode, Node
from lamina.oci.digest import Digest

# A new blob's key (its slot) -> (digest, size) once committed; existing blobs are
# their own digests and the resolver gives their sizes too.
BlobResolver = Callable[[BlobKey], tuple[Digest, int]]

_U32 = (1 << 32) - 1


class _Heap:
    def __init__(self) -> None:
        self._data = bytearray()
        self._at: dict[bytes, int] = {}

    def add(self, value: bytes) -> int:
        if not value:
            return 0
        at = self._at.get(value)
        if at is None:
            at = self._at[value] = len(self._data)
            self._data += value
            if len(self._data) > _U32:
                raise LimitExceeded("bootstrap string heap is over 4 GiB")
        return at

    def bytes(self) -> bytes:
        return bytes(self._data)


def encode_bootstrap(root: Node, chunk_size: int, resolve_blob: BlobResolver) -> bytes:
    """Serialise the tree under ``root`` (a directory node)."""
    if not root.is_dir:
        raise InvalidArgument("the root of a bootstrap must be a directory")
    # Breadth first: each directory's children are one contiguous, sorted dirent range.
    dirents: list[tuple[int, Inode, bytes]] = [(0, root.inode, b"")]
    ranges: dict[int, tuple[int, int]] = {}  # id(dir inode) -> (first child, count)
    queue: deque[tuple[int, Node]] = deque([(0, root)])
    while queue:
        index, node = queue.popleft()
        assert node.children is not None
        first = len(dirents)
        for name in sorted(node.children):
            child = node.children[name]
            if child.is_dir:
                queue.append((len(dirents), child))
            dirents.append((index, child.inode, name))
        ranges[id(node.inode)] = (first, len(node.children))

    inode_index: dict[int, int] = {}
    inodes: list[Inode] = []
    nlink: dict[int, int] = {}
    for _, inode, _name in dirents:
        key = id(inode)
        nlink[key] = nlink.get(key, 0) + 1
        if key not in inode_index:
            inode_index[key] = len(inodes)
            inodes.append(inode)

    chunk_index: dict[int, int] = {}
    chunks: list[ChunkRef] = []
    for inode in inodes:
        for seg in inode.segments:
            if id(seg.chunk) not in chunk_index:
                chunk_index[id(seg.chunk)] = len(chunks)
                chunks.append(seg.chunk)
    blob_index: dict[BlobKey, int] = {}
    blobs: list[tuple[Digest, int]] = []
    for chunk in chunks:
        if chunk.blob not in blob_index:
            blob_index[chunk.blob] = len(blobs)
            blobs.append(resolve_blob(chunk.blob))

    heap = _Heap()
    out = bytearray()
    for digest, size in blobs:
        out += lay.BLOB.pack(bytes.fromhex(digest.encoded), size)
    for c in chunks:
        out += lay.CHUNK.pack(c.digest, blob_index[c.blob], c.offset, c.csize, c.usize, c.flags)
    segments = bytearray()
    xattrs = bytearray()
    n_segments = n_xattrs = 0
    subdirs: dict[int, int] = {}
    for parent, inode, _name in dirents[1:]:
        if inode.type is lay.InodeType.DIR:
            key = id(dirents[parent][1])
            subdirs[key] = subdirs.get(key, 0) + 1
    for inode in inodes:
        key = id(inode)
        if inode.type is lay.InodeType.DIR:
            span = ranges[key]
            links = 2 + subdirs.get(key, 0)
        else:
            span = (n_segments, len(inode.segments))
            links = nlink[key]
            for seg in inode.segments:
                segments += lay.SEGMENT.pack(chunk_index[id(seg.chunk)], seg.offset, seg.length)
            n_segments += len(inode.segments)
        first_xattr = n_xattrs
        for name in sorted(inode.xattrs):
            value = inode.xattrs[name]
            xattrs += lay.XATTR.pack(heap.add(name), len(name), heap.add(value), len(value))
        n_xattrs += len(inode.xattrs)
        out += lay.INODE.pack(
            inode.type,
            inode.flags,
            inode.mode,
            inode.uid,
            inode.gid,
            inode.mtime_ns,
            inode.size,
            inode.devmajor,
            inode.devminor,
            links,
            heap.add(inode.link),
            len(inode.link),
            first_xattr,
            len(inode.xattrs),
            span[0],
            span[1],
            inode.digest,
        )
    for parent, inode, name in dirents:
        out += lay.DIRENT.pack(parent, inode_index[id(inode)], heap.add(name), len(name))
    out += segments
    out += xattrs
    out += heap.bytes()
    total = lay.HEADER.size + len(out) + lay.TRAILER_SIZE
    header = lay.HEADER.pack(
        lay.MAGIC,
        lay.VERSION,
        0,
        chunk_size,
        total,
        len(blobs),
        len(chunks),
        len(inodes),
        len(dirents),
        n_segments,
        n_xattrs,
        len(heap.bytes()),
    )
    body = header + bytes(out)
    return body + hashlib.sha256(body).digest()
