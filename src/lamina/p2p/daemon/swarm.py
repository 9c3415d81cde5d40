"""The swarm half of a peer: the engine of :mod:`lamina.p2p.peer` over the scheduler's
HTTP client, the piece routes on the peer's app, and the host heartbeat.

The heartbeat (``POST /v1/hosts`` every ``HOST_HEARTBEAT`` seconds) keeps the host alive
at the scheduler and re-announces it after a scheduler restart; a failed beat is
logged, not fatal: the engine falls back to the upstream while the scheduler is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from lamina.errors import InvalidArgument, LaminaError
from lamina.http.errors import network_errors
from lamina.p2p.api import HOST_HEARTBEAT, BlobSource, HostInfo

if TYPE_CHECKING:
    from lamina.p2p.daemon.serve import PeerConfig

log = logging.getLogger("lamina.p2p.peer")


async def _heartbeat(announce: Callable[[], Awaitable[None]], every: float) -> None:
    failing = False
    errors: tuple[type[BaseException], ...] = (LaminaError, *network_errors())
    while True:
        await asyncio.sleep(every)
        try:
            await announce()
        except errors as exc:
            if not failing:
                log.warning("scheduler heartbeat failed (retrying every %.0fs): %s", every, exc)
            failing = True
            continue
        if failing:
            log.info("scheduler heartbeat answered again: host re-announced")
        failing = False


async def open_swarm(
    app: web.Application, config: PeerConfig, url: str
) -> tuple[BlobSource, Any, Callable[[], Awaitable[None]]]:
    from lamina.p2p.client import HttpSchedulerClient
    from lamina.p2p.peer.engine import PeerEngine
    from lamina.p2p.peer.rates import TokenBucket, parse_rate, parse_size
    from lamina.p2p.peer.server import UploadGate, add_piece_routes
    from lamina.p2p.peer.storage import PieceStore

    if config.swarm_key is None or config.scheduler is None:
        raise InvalidArgument("joining a swarm needs --scheduler and --swarm-key")
    key = config.swarm_key
    host = HostInfo(
        host_id=config.host_id or urlsplit(url).netloc,
        addr=url,
        seed=config.seed,
        rack=config.rack,
    )
    store = PieceStore(
        config.cache, cache_size=parse_size(config.cache_size) if config.cache_size else None
    )
    scheduler = HttpSchedulerClient(config.scheduler, key)
    download = TokenBucket.of(parse_rate(config.download_limit)) if config.download_limit else None
    upload = TokenBucket.of(parse_rate(config.upload_limit)) if config.upload_limit else None
    engine = PeerEngine(store, scheduler, host, key, download_limit=download)
    try:
        await engine.start()
    except BaseException:
        await scheduler.close()
        raise
    add_piece_routes(
        app,
        store,
        key,
        UploadGate(slots=host.upload_slots, limiter=upload),
        on_seed=engine.seed,
        counters=engine.counters,
    )
    beat = asyncio.ensure_future(_heartbeat(lambda: scheduler.announce_host(host), HOST_HEARTBEAT))

    async def close() -> None:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await engine.close()
        await scheduler.close()

    return engine, engine.counters, close
