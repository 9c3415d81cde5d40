"""The access check of a blob GET: may *this* client read *this* blob?

A cached blob of a private repository must reach a client only after the upstream
has said this client's credentials may read it: the mirror sends a ``HEAD`` of the
blob to the upstream with the client's own ``Authorization`` and serves the bytes
only on a 2xx. Any other answer goes back to the client verbatim (status,
``WWW-Authenticate``, body), so it does its token dance as with the upstream itself
and comes back with a token.

A 2xx is remembered for :data:`TTL` seconds per (sha256 of the credential, upstream,
repository, digest): the digest is part of the key because a registry answers a HEAD
of a blob only in a repository that links it, and a client allowed one repository
must not read another repository's blob through the cache. Refusals are never cached
(the next request, perhaps with a fresh token, asks again). The blob's size comes
from the same answer.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lamina.http.redirects import MAX_REDIRECTS, REDIRECT_STATUSES, next_hop, same_origin
from lamina.p2p.mirror.headers import response_headers

if TYPE_CHECKING:
    import aiohttp

TTL = 30.0
MAX_ENTRIES = 65536
MAX_ERROR_BODY = 64 << 10


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    size: int | None = None
    """The blob's length (2xx only)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _key(authorization: str, upstream: str, repository: str, digest: str) -> tuple[str, ...]:
    # Only a hash of the credential is kept in memory.
    return (hashlib.sha256(authorization.encode()).hexdigest(), upstream, repository, digest)


class AccessChecker:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._ttl = ttl
        self._clock = clock
        self._allowed: dict[tuple[str, ...], tuple[float, int]] = {}  # key -> (expiry, size)
        self.upstream_checks = 0
        """HEADs sent to upstreams (the cache's misses)."""

    async def check(
        self, upstream: str, repository: str, digest: str, authorization: str
    ) -> Answer:
        key = _key(authorization, upstream, repository, digest)
        now = self._clock()
        hit = self._allowed.get(key)
        if hit is not None and hit[0] > now:
            return Answer(200, size=hit[1])
        answer = await self._head(f"{upstream}/v2/{repository}/blobs/{digest}", authorization)
        if answer.ok and answer.size is not None:
            if len(self._allowed) >= MAX_ENTRIES:
                self._allowed = {k: v for k, v in self._allowed.items() if v[0] > now}
                if len(self._allowed) >= MAX_ENTRIES:
                    self._allowed.clear()
            self._allowed[key] = (now + self._ttl, answer.size)
        return answer

    async def _head(self, url: str, authorization: str) -> Answer:
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            headers = {}
            # credentials only on the upstream's own origin, never on a redirect's target
            if authorization and same_origin(url, first):
                headers["Authorization"] = authorization
            self.upstream_checks += 1
            async with self._session.head(
                url, headers=headers, allow_redirects=False, ssl=_tls(url)
            ) as resp:
                if resp.status in REDIRECT_STATUSES:
                    url = next_hop("HEAD", url, resp.status, resp.headers.get("Location")).url
                    continue
                if 200 <= resp.status < 300:
                    length = resp.headers.get("Content-Length")
                    size = int(length) if length and length.isdigit() else None
                    return Answer(resp.status, size=size)
                body = await resp.content.read(MAX_ERROR_BODY)
                return Answer(resp.status, tuple(response_headers(resp.headers.items())), body)
        return Answer(502, body=b'{"errors":[{"code":"UNKNOWN","message":"too many redirects"}]}')


def _tls(url: str) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=``: our verified context for https (aiohttp's default has no CA,
    see lamina.http.tls); plain http has none to use."""
    if not url.startswith("https://"):
        return True
    from lamina.http.tls import verified_context

    return verified_context()
