"""Blob GET/HEAD/DELETE (distribution-spec end-2, end-10): the range and headers come from
``protocol.blob_answer``; the bytes go out with sendfile when the driver has a local
path and the connection is plain TCP, else streamed from ``open_blob`` in 1 MiB reads."""

from __future__ import annotations

import asyncio
import logging
import os
import select

from aiohttp import web

from lamina.errors import NotFound
from lamina.oci.digest import Digest
from lamina.registry import protocol as p
from lamina.registry.server.context import BASE_HEADERS, BYTES_OUT, Context
from lamina.registry.storage.api import CHUNK

log = logging.getLogger("lamina.registry.server")

# A peer that takes no byte for this long is gone: free the sending thread.
SEND_STALL_SECONDS = 120.0


def _blob_unknown(name: str, digest: Digest) -> p.RegistryError:
    return p.RegistryError(
        "BLOB_UNKNOWN",
        f"blob {digest} unknown to repository {name}",
        detail={"digest": str(digest)},
    )


async def blob_get(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.digest is not None
    name, digest, storage = route.name, route.digest, ctx.storage
    if not await ctx.quick(storage.has_link, name, digest):
        raise _blob_unknown(name, digest)
    size = await ctx.quick(storage.stat_blob, digest)
    answer = p.blob_answer(digest, size, request.headers.get("Range"))
    headers = {**BASE_HEADERS, **answer.headers}
    if route.method == "HEAD":
        # Response(body=None) would announce Content-Length: 0; HEAD keeps the blob's.
        head = web.StreamResponse(status=answer.status, headers=headers)
        head.content_length = answer.length
        return head
    resp = web.StreamResponse(status=answer.status, headers=headers)
    resp.content_length = answer.length
    if answer.length <= 0:
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    path = await ctx.quick(storage.blob_path, digest)
    transport = request.transport
    plain = transport is not None and transport.get_extra_info("sslcontext") is None
    try:
        if path is not None and plain:
            await _send_file(ctx, request, resp, path, start=answer.start, length=answer.length)
        else:
            await _send_stream(ctx, request, resp, digest, start=answer.start, length=answer.length)
    except OSError as exc:
        if not resp.prepared:
            raise
        # The peer went away mid-body: the status line is out, so there is nobody to
        # answer; drop the connection (it is mid-message and cannot be reused).
        log.info("blob %s: peer gone after the headers: %s", digest, exc)
        if request.transport is not None:
            request.transport.abort()
        return resp
    request[BYTES_OUT] = answer.length
    return resp


async def _send_stream(
    ctx: Context,
    request: web.Request,
    resp: web.StreamResponse,
    digest: Digest,
    *,
    start: int,
    length: int,
) -> None:
    reader = await ctx.call(ctx.storage.open_blob, digest, start, length)
    try:
        await resp.prepare(request)
        while chunk := await ctx.transfer(reader.read, CHUNK):
            await resp.write(chunk)
    finally:
        await ctx.call(reader.close)
    await resp.write_eof()


def _sendfile_blocking(sock_fd: int, path: str, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``path`` from ``offset`` to a non-blocking socket with
    sendfile(2), waiting for writability with poll(2): the kernel moves the pages."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        while count > 0:
            try:
                sent = os.sendfile(sock_fd, fd, offset, count)
            except BlockingIOError:
                if not poller.poll(SEND_STALL_SECONDS * 1000):
                    raise TimeoutError("peer stopped reading") from None
                continue
            if sent == 0:
                raise ConnectionResetError("blob file ended early")
            offset += sent
            count -= sent
    finally:
        os.close(fd)


async def _send_file(
    ctx: Context,
    request: web.Request,
    resp: web.StreamResponse,
    path: str,
    *,
    start: int,
    length: int,
) -> None:
    await resp.prepare(request)  # sends the status line and headers
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    loop = asyncio.get_running_loop()
    if hasattr(transport, "_sendfile_compatible"):
        # The stock asyncio loop: its own sendfile waits for writability on the loop.
        with open(path, "rb") as f:
            await loop.sendfile(transport, f, start, length)
    else:
        # uvloop has no loop.sendfile: once the headers have left the transport's
        # buffer, a thread owns the socket's output until the body is sent (HTTP/1.1
        # answers one request at a time, so nothing else writes meanwhile).
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise ConnectionResetError("connection lost")
            await asyncio.sleep(0.0005)
        sock = transport.get_extra_info("socket")
        # A duplicate descriptor: if the loop closes the connection meanwhile, the
        # number it frees may be reused by a new connection, and the thread must never
        # write into that one. The duplicate keeps this socket alive until we are done.
        fd = os.dup(sock.fileno())
        try:
            await ctx.transfer(_sendfile_blocking, fd, path, start, length)
        finally:
            os.close(fd)
    await resp.write_eof()


async def blob_delete(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.digest is not None
    try:
        await ctx.call(ctx.storage.unlink_blob, route.name, route.digest)
    except NotFound as exc:
        raise _blob_unknown(route.name, route.digest) from exc
    return web.Response(status=202, headers={**BASE_HEADERS, "Content-Length": "0"})
