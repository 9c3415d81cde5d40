"""The bootstrap's byte layout, version 1 (docs/lazy.md draws it): constants and record
structs, shared by the encoder and the decoder so that the two cannot drift apart.

Little-endian fixed-size records in sections whose sizes follow from the header's
counts, then a string heap, then a SHA-256 trailer over everything before it::

    header | blobs | chunks | inodes | dirents | segments | xattrs | heap | sha256

Fixed records (not msgpack or JSON) so that a reader can index the file in place
(``struct.unpack_from`` at ``base + i * size``) without building one Python object per
inode, and so that a section's size is known from the header before it is read: a
hostile header cannot make the decoder allocate more than the file's own bytes.
"""

from __future__ import annotations

import enum
import struct

MAGIC = b"LMNALAZY"
VERSION = 1

# header: magic, version, flags, chunk_size, total_size, then the counts of blobs,
# chunks, inodes, dirents, segments, xattrs, and the heap's size; 12 bytes reserved (0)
HEADER = struct.Struct("<8sHHIQIIIIIII12x")
BLOB = struct.Struct("<32sQ")  # sha256 of the blob, its size
CHUNK = struct.Struct(
    "<32sIQIII"
)  # sha256 of the uncompressed bytes, blob, offset, csize, usize, flags
# type, flags, mode, uid, gid, mtime_ns, size, devmajor, devminor, nlink, link heap offset,
# link length, first xattr, xattr count, first span, span count, sha256 of the content.
# The span is the file's segments (FILE) or the dirents of its children (DIR).
INODE = struct.Struct("<BBHIIqQIIIIIIIII32s")
DIRENT = struct.Struct("<IIIH")  # parent dirent, inode, name heap offset, name length
SEGMENT = struct.Struct("<III")  # chunk, offset in the chunk's uncompressed bytes, length
XATTR = struct.Struct("<IHII")  # name heap offset, name length, value heap offset, length
TRAILER_SIZE = 32

assert HEADER.size == 64 and INODE.size == 96 and CHUNK.size == 56

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 16 << 20
# A compressed chunk is never kept larger than its raw bytes (it is stored raw then),
# so csize <= usize <= MAX_CHUNK_SIZE holds for every valid chunk.

# Loading caps: the whole bootstrap is held in memory (a Debian image's is ~1 MB).
DEFAULT_MAX_BOOTSTRAP_BYTES = 256 << 20
MAX_NAME_BYTES = 255  # NAME_MAX
MAX_LINK_BYTES = 4096  # PATH_MAX
MAX_XATTR_NAME = 255  # XATTR_NAME_MAX
MAX_XATTR_VALUE = 64 << 10  # XATTR_SIZE_MAX


class InodeType(enum.IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    CHAR = 4
    BLOCK = 5
    FIFO = 6


INODE_PREFETCH = 1  # inode flag: the file is on the prefetch list (its chunks come first)
CHUNK_RAW = 1  # chunk flag: stored uncompressed (zstd did not make it smaller)
