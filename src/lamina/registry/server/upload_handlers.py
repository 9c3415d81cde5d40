"""Blob uploads (distribution-spec end-4a/4b, end-5, end-6, end-11, end-13, end-14): the
I/O around ``protocol``'s upload state machine.

Request bodies are never held whole: the event loop reads about 1 MiB at a time (with
a no-progress timeout) and a worker thread appends each piece with the driver's
``append_upload``, so memory stays bounded whatever the blob size, the loop never
blocks on the disk, and a stalled client never holds a thread.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import StreamReader, web

from lamina.errors import LaminaError, NotFound
from lamina.oci.digest import Digest
from lamina.registry import protocol as p
from lamina.registry.server.context import BASE_HEADERS, BYTES_IN, Context
from lamina.registry.storage.api import CHUNK

# Body bytes handed to the storage per call. The filesystem driver appends each piece
# as it comes; a remote driver pays a few requests per call, so it gets fewer, bigger
# pieces (above S3's 5 MiB part minimum).
LOCAL_PIECE = CHUNK
REMOTE_PIECE = 8 << 20


async def _read_piece(content: StreamReader, size: int, idle: float) -> list[bytes]:
    """Up to ``size`` bytes of the body, read on the loop; TimeoutError when the peer
    sends nothing for ``idle`` seconds."""
    parts: list[bytes] = []
    total = 0
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(loop.time() + idle) as deadline:
        while total < size:
            data = await content.readany()
            if not data:
                break
            parts.append(data)
            total += len(data)
            deadline.reschedule(loop.time() + idle)
    return parts


def _has_body(request: web.Request) -> bool:
    length = request.content_length
    if length is not None:
        return length > 0
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise p.RegistryError("SIZE_INVALID", f"bad Content-Length {raw[:30]!r}")
    return int(raw)


async def _append(ctx: Context, request: web.Request, name: str, uuid: str) -> tuple[int, int]:
    """Stream the body into the session; returns (new total size, bytes read).

    The body is read on the event loop with a no-progress timeout, and each piece is
    written by a thread while the next one is read: a client that stalls holds its
    socket and at most two pieces of memory, never a thread. A stall ends the request
    with 408 and the bytes stored so far stay in the session (a chunked client can ask
    for its offset and resume)."""
    idle = ctx.limits.idle_timeout
    piece = LOCAL_PIECE if ctx.local else REMOTE_PIECE
    size = await ctx.quick(ctx.storage.upload_size, name, uuid)
    count = 0
    writing: asyncio.Future[int] | None = None
    with ctx.upload_slot(request.remote):
        try:
            while True:
                try:
                    parts = await _read_piece(request.content, piece, idle)
                except TimeoutError:
                    raise p.RegistryError(
                        "BLOB_UPLOAD_INVALID",
                        f"the request body made no progress for {idle:g}s",
                        status=408,
                        hint="send the body without pausing, or raise --idle-timeout",
                    ) from None
                if writing is not None:
                    size = await writing
                    writing = None
                if not parts:
                    break
                count += sum(map(len, parts))
                request[BYTES_IN] = request.get(BYTES_IN, 0) + sum(map(len, parts))
                loop = asyncio.get_running_loop()
                writing = loop.run_in_executor(
                    ctx.transfers, ctx.storage.append_upload, name, uuid, parts
                )
        finally:
            if writing is not None:
                # never leave a write running behind a failed request
                await asyncio.wait([writing])
    return size, count


def _session(name: str, uuid: str, offset: int) -> p.UploadSession:
    return p.UploadSession(uuid, name, offset, time.time())


def _accepted(ctx: Context, session: p.UploadSession) -> web.Response:
    headers = {
        **BASE_HEADERS,
        **p.upload_headers(session, ctx.chunk_min_length),  # OCI-Chunk-Min-Length too
        "Content-Length": "0",
    }
    return web.Response(status=202, headers=headers)


def _created(name: str, digest: Digest) -> web.Response:
    headers = {
        **BASE_HEADERS,
        "Location": f"/v2/{name}/blobs/{digest}",
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    }
    return web.Response(status=201, headers=headers)


def _upload_unknown(uuid: str) -> p.RegistryError:
    return p.RegistryError(
        "BLOB_UPLOAD_UNKNOWN", f"upload {uuid} unknown", detail={"uuid": uuid},
        hint="start a new upload with POST /v2/<name>/blobs/uploads/",
    )  # fmt: skip


async def upload_start(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None
    uuid = await ctx.call(ctx.storage.start_upload, route.name)
    ctx.touch(uuid)
    return _accepted(ctx, _session(route.name, uuid, 0))


async def upload_monolithic(
    ctx: Context, request: web.Request, route: p.Route
) -> web.StreamResponse:
    assert route.name is not None and route.digest is not None
    name, storage = route.name, ctx.storage
    declared = _content_length(request)
    uuid = await ctx.call(storage.start_upload, name)
    ctx.touch(uuid)
    lock = ctx.lock(uuid)
    try:
        async with lock:
            size, _ = await _append(ctx, request, name, uuid)
            p.check_received(size, declared)
            # finish_upload hashes what it stored: a mismatch raises DigestMismatch
            # (answered DIGEST_INVALID) and discards the session.
            digest = await ctx.transfer(storage.finish_upload, name, uuid, route.digest)
    except BaseException:
        await ctx.call(storage.cancel_upload, name, uuid)
        raise
    finally:
        ctx.forget(uuid)
    return _created(name, digest)


async def upload_mount(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.mount is not None
    name, digest, storage = route.name, route.mount, ctx.storage
    source = route.mount_from
    if source is not None:
        mountable = await ctx.quick(storage.has_link, source, digest)
    else:
        # end-11 without ``from``: with auth on, the client proved rights on no other
        # repository, so only an open registry looks the blob up everywhere.
        mountable = ctx.authenticator is None and await _stored(ctx, digest)
    if mountable:
        try:
            await ctx.call(storage.link_blob, name, digest)
            return _created(name, digest)
        except NotFound:
            pass  # collected meanwhile: fall back to an upload
    # distribution-spec: a registry that cannot mount answers like an upload start.
    return await upload_start(ctx, request, route)


async def _stored(ctx: Context, digest: Digest) -> bool:
    try:
        await ctx.quick(ctx.storage.stat_blob, digest)
    except NotFound:
        return False
    return True


async def _current(ctx: Context, name: str, uuid: str) -> p.UploadSession:
    try:
        offset = await ctx.quick(ctx.storage.upload_size, name, uuid)
    except NotFound as exc:
        raise _upload_unknown(uuid) from exc
    return _session(name, uuid, offset)


async def upload_patch(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.uuid is not None
    name, uuid = route.name, route.uuid
    async with ctx.lock(uuid):
        session = await _current(ctx, name, uuid)
        expected = p.apply_patch(
            session, request.headers.get("Content-Range"), _content_length(request)
        )
        ctx.touch(uuid)
        size, _ = await _append(ctx, request, name, uuid)
        ctx.touch(uuid)
        session = _session(name, uuid, size)
        if expected is not None and size != expected:
            raise p.RegistryError(
                "SIZE_INVALID",
                f"chunk ended at {size}, its headers said {expected}",
                detail={"offset": size, "expected": expected},
            )
    return _accepted(ctx, session)


async def upload_finish(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.uuid is not None and route.digest is not None
    name, uuid, storage = route.name, route.uuid, ctx.storage
    async with ctx.lock(uuid):
        session = await _current(ctx, name, uuid)
        if _has_body(request):
            expected = p.apply_patch(
                session, request.headers.get("Content-Range"), _content_length(request)
            )
            size, _ = await _append(ctx, request, name, uuid)
            if expected is not None and size != expected:
                raise p.RegistryError(
                    "SIZE_INVALID", f"final chunk ended at {size}, its headers said {expected}"
                )
        try:
            digest = await ctx.transfer(storage.finish_upload, name, uuid, route.digest)
        except NotFound as exc:
            raise _upload_unknown(uuid) from exc
        finally:
            ctx.forget(uuid)
    return _created(name, digest)


async def upload_status(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.uuid is not None
    session = await _current(ctx, route.name, route.uuid)
    headers = {**BASE_HEADERS, **p.upload_headers(session, ctx.chunk_min_length)}
    headers["Content-Length"] = "0"
    return web.Response(status=204, headers=headers)


async def upload_cancel(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.uuid is not None
    await _current(ctx, route.name, route.uuid)  # 404 for an unknown session
    async with ctx.lock(route.uuid):
        await ctx.call(ctx.storage.cancel_upload, route.name, route.uuid)
    ctx.forget(route.uuid)
    return web.Response(status=204, headers={**BASE_HEADERS, "Content-Length": "0"})


def expire(ctx: Context, now: float) -> int:
    """Cancel sessions idle for longer than the TTL (run in a thread); returns how many.
    Sessions a request is writing right now are skipped."""
    expired = 0
    for info in ctx.storage.iter_uploads():
        lock = ctx.locks.get(info.uuid)
        if lock is not None and lock.locked():
            continue
        session = p.UploadSession(
            info.uuid, info.name, info.size, info.started, updated=ctx.touched.get(info.uuid)
        )
        if not p.is_stale(session, now, ctx.upload_ttl):
            continue
        try:
            ctx.storage.cancel_upload(info.name, info.uuid)
        except LaminaError:
            # an invalid name a crash left behind: nothing a request can reach
            continue
        ctx.touched.pop(info.uuid, None)
        if lock is not None and not lock.locked():
            ctx.locks.pop(info.uuid, None)
        expired += 1
    return expired
