"""Which compression a layer blob uses, from its first bytes, and the media-type suffixes.

gzip (RFC 1952) and zstd (RFC 8878, skippable frames included) are read; bzip2, xz and
lz4 are recognised only to be refused clearly. A plain tar is recognised by its ustar
magic or, for old v7 tars, by a header block whose checksum holds.
"""

from __future__ import annotations

from lamina.errors import InvalidArgument, InvalidFormat, Unsupported
from lamina.layers.tar.blocks import BLOCK_SIZE, ZERO_BLOCK
from lamina.layers.tar.decode import decode_header

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"

SUFFIXES = {"": "", "gzip": "+gzip", "zstd": "+zstd"}


def unknown_compression(kind: str) -> Unsupported:
    """The error for a compression name lamina does not know."""
    return Unsupported(f"unknown compression {kind!r}", hint="use gzip, zstd or none")


def media_type_suffix(kind: str) -> str:
    """The layer media-type suffix for a compression: ``+gzip``, ``+zstd`` or ``""``."""
    try:
        return SUFFIXES[kind]
    except KeyError:
        raise unknown_compression(kind) from None


def detect(head: bytes) -> str:
    """The compression of a layer from its first bytes (512 or more for plain tar)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_skippable(head):
        return "zstd"
    if head.startswith(_BZIP2_MAGIC):
        raise Unsupported(
            "bzip2-compressed layers are not supported",
            hint="recompress the layer with gzip or zstd",
        )
    if head.startswith(_XZ_MAGIC):
        raise Unsupported(
            "xz-compressed layers are not supported", hint="recompress the layer with gzip or zstd"
        )
    if head.startswith(_LZ4_MAGIC):
        raise Unsupported(
            "lz4-compressed layers are not supported",
            hint="recompress the layer with gzip or zstd",
        )
    if not head or head[:BLOCK_SIZE] == ZERO_BLOCK[: len(head)]:
        return ""  # empty, or an empty tar (end blocks only)
    if head[257:262] == b"ustar":
        return ""
    if len(head) >= BLOCK_SIZE:
        try:
            decode_header(head[:BLOCK_SIZE])
        except InvalidArgument:
            pass
        else:
            return ""  # a v7 header with a valid checksum
    raise InvalidFormat(
        "layer is neither a tar nor gzip or zstd data",
        hint="the blob is damaged or is not a layer",
    )


def is_skippable(head: bytes) -> bool:
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"
