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

    def prometheus(self) -> str:
        """The counters as Prometheus text (``lamina_p2p_*``), for a ``/metrics`` page."""
        rows = [
            (
                "bytes_from_source_total",
                self.bytes_from_source,
                "Blob bytes fetched from the origin.",
            ),
            ("bytes_from_peers_total", self.bytes_from_peers, "Verified piece bytes from parents."),
            ("bytes_uploaded_total", self.bytes_uploaded, "Piece bytes sent to children."),
            ("pieces_corrupt_total", self.pieces_corrupt, "Pieces refused: wrong digest."),
            (
                "source_fallbacks_total",
                self.source_fallbacks,
                "Blobs fetched from the origin: no scheduler.",
            ),
        ]
        lines: list[str] = []
        for name, value, help_text in rows:
            lines += [
                f"# HELP lamina_p2p_{name} {help_text}",
                f"# TYPE lamina_p2p_{name} counter",
                f"lamina_p2p_{name} {value}",
            ]
        return "\n".join(lines) + "\n"
