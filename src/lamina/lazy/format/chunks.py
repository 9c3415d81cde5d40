"""One chunk's bytes in a data blob: a zstd frame, or the raw bytes when zstd does not
make them smaller. Each chunk decodes on its own and is checked against the SHA-256 of
its uncompressed bytes that the bootstrap holds, so a chunk fetched from anywhere (a
registry range, a peer, a cache file) is either exactly right or an error.
"""

from __future__ import annotations

import hashlib

import zstandard

from lamina.errors import DigestMismatch, SizeMismatch
from lamina.lazy.format.decode import ChunkEntry
from lamina.lazy.format.layout import CHUNK_RAW

DEFAULT_LEVEL = 3  # zstd's own default: ~gzip -6 ratios at several times the speed


class ChunkCompressor:
    """Compresses chunks one at a time (one zstd context, reused)."""

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        self._zstd = zstandard.ZstdCompressor(level=level, write_content_size=True)

    def compress(self, data: bytes | memoryview) -> tuple[bytes, int]:
        """(payload, flags): the zstd frame, or the bytes themselves flagged raw."""
        frame = self._zstd.compress(data)
        if len(frame) >= len(data):
            return bytes(data), CHUNK_RAW
        return frame, 0


def decode_chunk(payload: bytes, chunk: ChunkEntry) -> bytes:
    """The verified uncompressed bytes of ``chunk`` from its ``payload``; raises
    DigestMismatch (or SizeMismatch) rather than return anything else."""
    if len(payload) != chunk.csize:
        raise SizeMismatch(
            f"chunk {chunk.digest} came with {len(payload)} bytes, expected {chunk.csize}"
        )
    if chunk.raw:
        data = payload
    else:
        # The frame's declared size must be the bootstrap's: a frame claiming more would
        # make the decompressor allocate it (the bootstrap caps usize at 16 MiB).
        try:
            declared = zstandard.frame_content_size(payload)
            if declared != chunk.usize:
                raise DigestMismatch(
                    f"chunk {chunk.digest} declares {declared} bytes, expected {chunk.usize}",
                    hint="the blob is damaged or is not the one the bootstrap names",
                )
            data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=chunk.usize)
        except zstandard.ZstdError as exc:
            raise DigestMismatch(
                f"chunk {chunk.digest} does not decompress: {exc}",
                hint="the blob is damaged or is not the one the bootstrap names",
            ) from exc
    if len(data) != chunk.usize or hashlib.sha256(data).hexdigest() != chunk.digest.encoded:
        raise DigestMismatch(
            f"chunk {chunk.digest} does not match its digest",
            hint="the blob is damaged or is not the one the bootstrap names; fetch it again",
        )
    return data
