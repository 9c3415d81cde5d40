"""The mirror's routes: ``GET /v2/<name>/blobs/<digest>`` through P2P (after the
access check), everything else under ``/v2/`` proxied to the upstream.

A blob GET answers ``200`` (or ``206`` for a single ``Range``, ``416`` for an
unsatisfiable one) with ``Content-Length`` and ``Docker-Content-Digest``, the bytes in
order from the :class:`lamina.p2p.api.BlobSource`. If the source fails before the
first byte the client gets a ``502`` with a registry error body; after it, the
connection is cut, so a client never takes a short body for a whole one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from lamina.errors import LaminaError, NotFound
from lamina.p2p.api import BlobRequest, BlobSource
from lamina.p2p.mirror.access import AccessChecker
from lamina.p2p.mirror.headers import BadRange, credential, parse_range
from lamina.p2p.mirror.proxy import forward
from lamina.p2p.mirror.upstreams import Upstreams

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("lamina.p2p.mirror")

# distribution's name grammar (path components joined by '/'), and sha256 digests:
# only those are tasks; any other blob GET is proxied like the rest.
_BLOB = re.compile(
    r"^/v2/(?P<name>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)/blobs/(?P<digest>sha256:[a-f0-9]{64})$"
)


@dataclass
class MirrorStats:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    """(kind, status) -> count; kind is ``blob`` (P2P path) or ``proxy``."""
    bytes_served: int = 0
    """Blob bytes sent to clients on the P2P path."""

    def count(self, kind: str, status: int) -> None:
        key = (kind, status)
        self.requests[key] = self.requests.get(key, 0) + 1


@dataclass
class Mirror:
    upstreams: Upstreams
    source: BlobSource
    session: aiohttp.ClientSession
    access: AccessChecker
    stats: MirrorStats = field(default_factory=MirrorStats)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        upstream = self.upstreams.select(request.query.get("ns"))
        if upstream is None:
            resp: web.StreamResponse = _error(
                404,
                "NAME_UNKNOWN",
                f"this mirror has no upstream {request.query.get('ns')!r}",
            )
            self.stats.count("proxy", resp.status)
            return resp
        m = _BLOB.match(request.path) if request.method == "GET" else None
        if m is None:
            resp = await forward(self.session, upstream, request)
            self.stats.count("proxy", resp.status)
            return resp
        resp = await self._blob(request, upstream, m.group("name"), m.group("digest"))
        self.stats.count("blob", resp.status)
        return resp

    async def _blob(
        self, request: web.Request, upstream: str, name: str, digest: str
    ) -> web.StreamResponse:
        authorization = credential(request.headers)
        answer = await self.access.check(upstream, name, digest, authorization)
        if not answer.ok:
            # The client's own GET goes to the upstream, whose answer (status,
            # WWW-Authenticate, the error body a HEAD lacks) is passed back verbatim.
            # Only the upstream decides: should it now allow the GET, the bytes it
            # sends are the ones the client gets, none from this peer's cache.
            return await forward(self.session, upstream, request)
        if answer.size is None:
            return _error(502, "UNKNOWN", f"the upstream did not say the size of {digest}")
        size = answer.size
        try:
            span = parse_range(request.headers.get("Range"), size)
        except BadRange:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = span if span is not None else (0, size)
        blob = BlobRequest(
            task=digest,
            size=size,
            source=f"{upstream}/v2/{name}/blobs/{digest}",
            source_headers={"Authorization": authorization} if authorization else {},
            start=start,
            end=end,
        )
        chunks = self.source.open(blob)
        try:
            first = await _first(chunks) if end > start else b""
        except NotFound as exc:
            await _close(chunks)
            return _error(404, "BLOB_UNKNOWN", exc.message)
        except (LaminaError, OSError) as exc:
            await _close(chunks)
            log.warning("blob %s: no bytes to serve: %s", digest, exc)
            return _error(502, "UNKNOWN", f"cannot fetch {digest}: {exc}")
        resp = web.StreamResponse(status=206 if span is not None else 200)
        resp.content_type = "application/octet-stream"
        resp.content_length = end - start
        resp.headers["Docker-Content-Digest"] = digest
        resp.headers["Accept-Ranges"] = "bytes"
        if span is not None:
            resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        await resp.prepare(request)
        try:
            if first:
                await resp.write(first)
                self.stats.bytes_served += len(first)
            async for chunk in chunks:
                await resp.write(chunk)
                self.stats.bytes_served += len(chunk)
        except (LaminaError, OSError) as exc:
            # Content-Length promised the rest: cut the connection so the client
            # knows the body is short, rather than ending it cleanly.
            log.warning("blob %s: stream cut after a failure: %s", digest, exc)
            if request.transport is not None:
                request.transport.abort()
            return resp
        finally:
            await _close(chunks)
        await resp.write_eof()
        return resp


async def _first(chunks: AsyncIterator[bytes]) -> bytes:
    async for chunk in chunks:
        if chunk:
            return chunk
    return b""


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)


MIRROR = web.AppKey("mirror", Mirror)


def add_mirror_routes(app: web.Application, mirror: Mirror) -> None:
    """``/v2/...`` on ``app``: blob GETs through ``mirror.source``, the rest proxied."""
    app[MIRROR] = mirror
    app.router.add_route("*", "/v2", mirror.handle)
    app.router.add_route("*", "/v2/{tail:.*}", mirror.handle)


def add_catch_all(app: web.Application, mirror: Mirror) -> None:
    """Anything else (a token realm on the upstream's host) to the default upstream;
    added last, after the peer's own routes."""

    async def other(request: web.Request) -> web.StreamResponse:
        return await forward(mirror.session, mirror.upstreams.default, request)

    app.router.add_route("*", "/{tail:.*}", other)
