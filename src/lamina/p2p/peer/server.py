"""The piece server: what other peers of the swarm fetch from this one (``docs/p2p.md``).

- ``GET /p2p/v1/tasks/{task}/bitfield?version=N``: held until the bitfield's version
  passes N or 2 s pass (long poll: a parent's HAVE stream, no per-piece messages).
- ``GET /p2p/v1/tasks/{task}/pieces/{n}``: the piece's bytes with sendfile (the kernel
  copies from the page cache to the socket), also while the task is still downloading.
- ``POST /p2p/v1/tasks/{task}/seed``: the scheduler (join token) asks this seed host to
  fetch a blob from the source; ``202``.

Pieces need ``Authorization: Swarm <task token>`` (:mod:`lamina.p2p.tokens`): ``401``
without one, ``403`` for a bad, expired or other task's token. Uploads hold one of
``slots`` (``503`` with ``Retry-After`` when all are taken: the child asks another
parent) and pay the upload token bucket before the piece goes out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from lamina.errors import InvalidArgument
from lamina.p2p import tokens
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket, take
from lamina.p2p.peer.storage import PieceStore, task_hex

LONG_POLL = 2.0

SeedCallback = Callable[[str, int, str], Awaitable[None] | None]
"""``on_seed(task, size, source)``: start a back-to-source download (don't wait for it)."""


@dataclass
class UploadGate:
    """How many pieces this host uploads at once, and how fast in all."""

    slots: int = 32
    limiter: TokenBucket | None = None
    active: int = 0


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


def add_piece_routes(
    app: web.Application,
    store: PieceStore,
    swarm_key: bytes,
    uploads: UploadGate | None = None,
    *,
    on_seed: SeedCallback | None = None,
    counters: Counters | None = None,
) -> None:
    """Add the piece server's routes to ``app`` (the front composes one app)."""
    key = tokens.check_key(swarm_key)
    gate = uploads or UploadGate()
    counts = counters or Counters()

    def refuse(request: web.Request, task: str) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Swarm" or not token:
            return _error(
                401, "UNAUTHORIZED", "a swarm token is needed", **{"WWW-Authenticate": "Swarm"}
            )
        if not tokens.check(key, task, token.strip(), time.time()):
            return _error(403, "DENIED", "the swarm token is not valid for this task")
        return None

    def task_of(request: web.Request) -> str:
        task = request.match_info["task"]
        try:
            task_hex(task)
        except InvalidArgument as exc:
            raise web.HTTPBadRequest(text=exc.message) from exc
        return task

    async def bitfield(request: web.Request) -> web.Response:
        task = task_of(request)
        if (refused := refuse(request, task)) is not None:
            return refused
        try:
            since = int(request.query.get("version", "-1"))
        except ValueError:
            return _error(400, "BAD_REQUEST", "version must be a number")
        tf = store.lookup(task)
        if tf is None:
            return _error(404, "NOT_FOUND", f"{task} is not here")
        await tf.wait_newer(since, LONG_POLL)
        body = {
            "version": tf.version,
            "pieces": base64.b64encode(bytes(tf.bits)).decode(),
            "complete": tf.complete,
        }
        return web.json_response(body)

    async def piece(request: web.Request) -> web.StreamResponse:
        task = task_of(request)
        if (refused := refuse(request, task)) is not None:
            return refused
        tf = store.lookup(task)
        try:
            n = int(request.match_info["n"])
        except ValueError:
            return _error(400, "BAD_REQUEST", "a piece number is a number")
        if tf is None or not 0 <= n < tf.count or not tf.has(n):
            return _error(404, "NOT_FOUND", f"piece {n} of {task} is not here")
        if gate.active >= gate.slots:
            return _error(503, "BUSY", "every upload slot is taken", **{"Retry-After": "1"})
        gate.active += 1
        try:
            with store.using(task):
                try:
                    reader = tf.open_reader()
                except FileNotFoundError:
                    return _error(404, "NOT_FOUND", f"{task} was evicted")
                with reader:
                    start, end = tf.span(n)
                    await take(gate.limiter, end - start)
                    response = web.StreamResponse(
                        headers={"Content-Type": "application/octet-stream"}
                    )
                    response.content_length = end - start
                    await response.prepare(request)
                    transport = request.transport
                    if transport is None:
                        raise ConnectionResetError("the child went away")
                    loop = asyncio.get_running_loop()
                    await loop.sendfile(transport, reader, start, end - start)
                    counts.bytes_uploaded += end - start
                    await response.write_eof()
                    return response
        finally:
            gate.active -= 1

    async def seed(request: web.Request) -> web.Response:
        task = task_of(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not presented:
            return _error(401, "UNAUTHORIZED", "a join token is needed")
        if not tokens.check_join(key, presented.strip()):
            return _error(403, "DENIED", "the join token is not this swarm's")
        if on_seed is None:
            return _error(409, "NOT_SEED", "this peer is not a seed")
        try:
            body = await request.json()
            size, source = int(body["size"]), str(body["source"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "BAD_REQUEST", "the body is {size, source}")
        result = on_seed(task, size, source)
        if result is not None:
            await result
        return web.json_response({"task": task}, status=202)

    app.router.add_get("/p2p/v1/tasks/{task}/bitfield", bitfield)
    app.router.add_get("/p2p/v1/tasks/{task}/pieces/{n}", piece)
    app.router.add_post("/p2p/v1/tasks/{task}/seed", seed)
