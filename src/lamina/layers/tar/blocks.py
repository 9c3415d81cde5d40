"""The tar block layout both ways share (POSIX pax, "ustar Interchange Format").

A tar stream is 512-byte blocks: a header block per member (preceded by PAX ``x``/``g``
or GNU ``L``/``K`` extended headers when a field does not fit), the content padded to a
block, and two zero blocks at the end. This module holds the constants of that layout
and the name codec; :mod:`~lamina.layers.tar.decode` and
:mod:`~lamina.layers.tar.encode` do the work.

Names are decoded as UTF-8 with ``surrogateescape``, so a name that is not UTF-8 comes
back as the same bytes when encoded again (``os`` functions do the same on Linux).
"""

from __future__ import annotations

BLOCK_SIZE = 512
ZERO_BLOCK = bytes(BLOCK_SIZE)
NUL = b"\0"

USTAR_MAGIC = b"ustar\x0000"  # POSIX: magic "ustar\0" + version "00"
GNU_MAGIC = b"ustar  \x00"  # GNU: magic "ustar " + version " \0"

# type flags of the extended headers that modify the next entry
PAX_LOCAL = b"x"
PAX_LOCAL_SOLARIS = b"X"  # Solaris spelling of "x"; same content
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
EXTENDED_TYPES = frozenset({PAX_LOCAL, PAX_LOCAL_SOLARIS, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK})

MAX_OCTAL_7 = 0o7777777  # 8-byte field: 7 digits + NUL
MAX_OCTAL_11 = 0o77777777777  # 12-byte field: 11 digits + NUL


def name_text(raw: bytes) -> str:
    """A name or text field as lamina holds it (UTF-8, undecodable bytes kept)."""
    return raw.decode("utf-8", "surrogateescape")


def name_bytes(text: str) -> bytes:
    """The bytes :func:`name_text` came from."""
    return text.encode("utf-8", "surrogateescape")


def cstr(field: bytes) -> bytes:
    """A NUL-terminated field (the field may also be full, without a NUL)."""
    return field.partition(NUL)[0]


def padding(size: int) -> int:
    """Bytes of zeros after ``size`` bytes of content, up to the next block."""
    return -size % BLOCK_SIZE
