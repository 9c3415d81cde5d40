"""Piece size and spans of a blob, as Dragonfly's client computes them.

``piece_length = clamp(next_pow2(ceil(size / 500)), 4 MiB, 64 MiB)``: about 500 pieces a
blob, never so small that per-piece overhead dominates nor so large that a swarm has
too few pieces to trade. Every peer computes the same value from the blob's size, so
the length never has to be trusted from a parent.
"""

from __future__ import annotations

MIN_PIECE = 4 << 20
MAX_PIECE = 64 << 20
TARGET_PIECES = 500


def piece_length(size: int) -> int:
    """The piece length for a blob of ``size`` bytes (a power of two)."""
    if size < 0:
        raise ValueError(f"negative blob size {size}")
    want = -(-size // TARGET_PIECES)  # ceil
    length = 1 << max(want - 1, 0).bit_length()
    return min(max(length, MIN_PIECE), MAX_PIECE)


def piece_count(size: int, length: int | None = None) -> int:
    """How many pieces a blob of ``size`` bytes has (0 for an empty blob)."""
    length = length or piece_length(size)
    return -(-size // length)


def piece_span(size: int, number: int, length: int | None = None) -> tuple[int, int]:
    """The byte range ``[start, end)`` of piece ``number``."""
    length = length or piece_length(size)
    count = piece_count(size, length)
    if not 0 <= number < count:
        raise ValueError(f"piece {number} out of range: the blob has {count} pieces")
    start = number * length
    return start, min(start + length, size)


def pieces_of_range(size: int, start: int, end: int, length: int | None = None) -> range:
    """The pieces that hold bytes ``[start, end)`` (a client's Range request)."""
    length = length or piece_length(size)
    if not 0 <= start <= end <= size:
        raise ValueError(f"range {start}-{end} is outside a blob of {size} bytes")
    if start == end:
        return range(0)
    return range(start // length, (end - 1) // length + 1)
