"""Everything a mirror does not serve from P2P goes to the upstream untouched: the
``/v2/`` check, manifests, tags, ``HEAD`` of blobs, uploads, token endpoints.

Bodies stream both ways (nothing is held whole); the client's credentials go along
(they are for the upstream); the ``Host`` header is the upstream's; hop-by-hop
headers stop here. Redirects are passed back, not followed: the client follows them
as it would from the upstream itself (and sends no credentials to a foreign origin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from lamina.p2p.mirror.access import _tls
from lamina.p2p.mirror.headers import request_headers, response_headers

if TYPE_CHECKING:
    import aiohttp

CHUNK = 1 << 20


def upstream_url(upstream: str, request: web.Request) -> str:
    """The upstream URL of ``request``, without containerd's ``ns`` (it is ours)."""
    query = [(k, v) for k, v in request.query.items() if k != "ns"]
    url = request.rel_url.with_query(query) if "ns" in request.query else request.rel_url
    return f"{upstream}{url.raw_path_qs}"


async def forward(
    session: aiohttp.ClientSession, upstream: str, request: web.Request
) -> web.StreamResponse:
    url = upstream_url(upstream, request)
    data = request.content.iter_chunked(CHUNK) if request.body_exists else None
    async with session.request(
        request.method,
        url,
        headers=request_headers(request.headers.items()),
        data=data,
        allow_redirects=False,
        ssl=_tls(url),
    ) as up:
        head = request.method == "HEAD"
        resp = web.StreamResponse(status=up.status, reason=up.reason)
        for key, value in response_headers(up.headers.items(), keep_length=head):
            resp.headers.add(key, value)
        if not head and up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        if not head:
            async for chunk in up.content.iter_chunked(CHUNK):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
