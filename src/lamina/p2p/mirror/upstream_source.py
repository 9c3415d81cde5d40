""":class:`UpstreamSource`: a :class:`lamina.p2p.api.BlobSource` that streams a blob
straight from the upstream with the client's own credentials.

It is what a peer serves with when no scheduler is configured or reachable, and the
reference the swarm engine is measured against. Redirects (a registry sending blob
content to S3 or a CDN) are followed as a registry client follows them: the
``Authorization`` goes only to the upstream's own origin. A whole-blob read is checked
against the digest as it streams; on a mismatch the stream ends with an error after
the last byte, so the client (whose ``Content-Length`` was the blob's) sees a failed
transfer, never a clean one.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lamina.errors import DigestMismatch, NotFound, ToolError
from lamina.http.redirects import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    next_hop,
    same_origin,
    too_many_redirects,
)
from lamina.p2p.api import BlobRequest
from lamina.p2p.mirror.access import _tls

if TYPE_CHECKING:
    import aiohttp

CHUNK = 1 << 20


@dataclass
class SourceCounters:
    bytes_from_source: int = 0
    bytes_from_peers: int = 0
    bytes_uploaded: int = 0


class UpstreamSource:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.counters = SourceCounters()

    def open(self, request: BlobRequest) -> AsyncIterator[bytes]:
        return self._stream(request)

    async def _stream(self, request: BlobRequest) -> AsyncIterator[bytes]:
        end = request.size if request.end is None else request.end
        whole = request.start == 0 and end == request.size
        url = first = request.source
        ranged = {} if whole else {"Range": f"bytes={request.start}-{end - 1}"}
        for _ in range(MAX_REDIRECTS + 1):
            headers = dict(ranged)
            if same_origin(url, first):
                headers.update(request.source_headers)
            async with self._session.get(
                url, headers=headers, allow_redirects=False, ssl=_tls(url)
            ) as resp:
                if resp.status in REDIRECT_STATUSES:
                    url = next_hop("GET", url, resp.status, resp.headers.get("Location")).url
                    continue
                if resp.status == 404:
                    raise NotFound(f"blob {request.task} is not at the upstream ({first})")
                if resp.status not in (200, 206):
                    raise ToolError(
                        f"GET {first}: the upstream answered {resp.status}",
                        hint="check the upstream registry",
                    )
                skip = request.start if resp.status == 200 else 0
                left = end - request.start
                hasher = hashlib.sha256() if whole else None
                async for received in resp.content.iter_chunked(CHUNK):
                    self.counters.bytes_from_source += len(received)
                    chunk = received
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    chunk = chunk[:left]
                    if not chunk:
                        continue
                    left -= len(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    if hasher is not None and left == 0:
                        _verify(request.task, hasher)
                    yield chunk
                    if left == 0:
                        return
                raise ToolError(
                    f"GET {first}: the upstream ended the blob {left} bytes early",
                    hint="try again",
                )
        raise too_many_redirects("GET", first)


def _verify(task: str, hasher: hashlib._Hash) -> None:
    algorithm, _, expected = task.partition(":")
    if algorithm == "sha256" and hasher.hexdigest() != expected:
        raise DigestMismatch(
            f"blob {task}: the upstream sent content with digest sha256:{hasher.hexdigest()}",
            hint="the upstream holds a damaged copy",
        )
