"""Compression of layer blobs: which one a blob uses, capped decompression, compressors.

- :mod:`~lamina.layers.compression.detect`      magic bytes -> ``"gzip"``, ``"zstd"`` or
  ``""`` (plain tar); media-type suffixes
- :mod:`~lamina.layers.compression.decompress`  :func:`open_decompressed`: gzip and zstd
  decoders with the bomb caps of :class:`~lamina.layers.api.Limits`
- :mod:`~lamina.layers.compression.compress`    :func:`make_compressor`: parallel
  deterministic gzip, multi-threaded zstd, or none

A compression is named by a string everywhere: ``"gzip"``, ``"zstd"`` or ``""`` (none).
"""

from __future__ import annotations

from lamina.layers.api import CHUNK
from lamina.layers.compression.compress import (
    GZIP_DEFAULT_LEVEL,
    ZSTD_DEFAULT_LEVEL,
    Compressor,
    GzipCompressor,
    IdentityCompressor,
    ZstdCompressor,
    make_compressor,
)
from lamina.layers.compression.decompress import RATIO_FLOOR, DecompressedStream, open_decompressed
from lamina.layers.compression.detect import detect, media_type_suffix

__all__ = [
    "CHUNK",
    "GZIP_DEFAULT_LEVEL",
    "RATIO_FLOOR",
    "ZSTD_DEFAULT_LEVEL",
    "Compressor",
    "DecompressedStream",
    "GzipCompressor",
    "IdentityCompressor",
    "ZstdCompressor",
    "detect",
    "make_compressor",
    "media_type_suffix",
    "open_decompressed",
]
