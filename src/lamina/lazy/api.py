"""Contracts of lamina.lazy.

:class:`ChunkFetcher` is where chunk bytes come from: a registry (Range GETs), a P2P
peer, the local store or a cache. It returns exactly the compressed bytes asked for
(``length`` bytes at ``offset`` of blob ``blob``) or raises; it need not verify them:
the reader checks every chunk against the bootstrap's digest before using it.
"""

from __future__ import annotations

from typing import Protocol

from lamina.oci.digest import Digest


class ChunkFetcher(Protocol):
    async def fetch(self, blob: Digest, offset: int, length: int) -> bytes: ...
