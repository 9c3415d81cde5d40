"""A peer's byte counters, shared by the engine (what came in) and the piece server
(what went out), read by ``/metrics`` and ``status``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    bytes_from_source: int = 0
    bytes_from_peers: int = 0
    bytes_uploaded: int = 0
    pieces_corrupt: int = 0
    """Pieces a parent sent that did not match the source's digest (never kept)."""
    source_fallbacks: int = 0
    """Blobs fetched from the origin because the scheduler could not be reached."""
