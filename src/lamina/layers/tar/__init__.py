"""The tar format of layers and archives: headers both ways, a streaming reader, a writer.

No filesystem here, and no :mod:`tarfile` (ARCHITECTURE.md section 5):

- :mod:`~lamina.layers.tar.blocks`  the block layout: sizes, magics, type flags, padding
- :mod:`~lamina.layers.tar.decode`  header blocks, PAX records and names -> :class:`Entry`
- :mod:`~lamina.layers.tar.encode`  :class:`Entry` -> ustar header (+ PAX when needed)
- :mod:`~lamina.layers.tar.stream`  :func:`read_entries` (front to back, capped) and
  :class:`TarWriter` (deterministic)
"""

from __future__ import annotations

from lamina.layers.tar.blocks import (
    BLOCK_SIZE,
    GNU_LONGNAME,
    PAX_LOCAL,
    PAX_LOCAL_SOLARIS,
    ZERO_BLOCK,
    cstr,
    padding,
)
from lamina.layers.tar.decode import Header, clean_name, decode_header, parse_pax
from lamina.layers.tar.encode import encode_entry
from lamina.layers.tar.stream import EntryReader, TarWriter, read_entries

__all__ = [
    "BLOCK_SIZE",
    "GNU_LONGNAME",
    "PAX_LOCAL",
    "PAX_LOCAL_SOLARIS",
    "ZERO_BLOCK",
    "EntryReader",
    "Header",
    "TarWriter",
    "clean_name",
    "cstr",
    "decode_header",
    "encode_entry",
    "padding",
    "parse_pax",
    "read_entries",
]
