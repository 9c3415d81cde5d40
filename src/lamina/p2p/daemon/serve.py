"""``lamina p2p peer``: one aiohttp server with the mirror, the piece routes and
``/metrics``, until SIGTERM/SIGINT.

Without ``--scheduler`` the peer is a plain pull-through mirror: every blob streams
from the upstream (:class:`~lamina.p2p.mirror.upstream_source.UpstreamSource`), after
the same access check. With one it joins the swarm: the engine of
:mod:`lamina.p2p.peer` is the blob source, the piece server answers other peers, and
the engine itself falls back to the upstream when the scheduler cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from lamina.errors import InvalidArgument
from lamina.http.session import new_session
from lamina.p2p.api import BlobSource
from lamina.p2p.daemon.metrics import CONTENT_TYPE, render
from lamina.p2p.mirror.access import AccessChecker
from lamina.p2p.mirror.app import Mirror, add_catch_all, add_mirror_routes
from lamina.p2p.mirror.upstream_source import UpstreamSource
from lamina.p2p.mirror.upstreams import Upstreams

log = logging.getLogger("lamina.p2p.peer")


@dataclass(frozen=True)
class PeerConfig:
    addr: str
    upstream: str
    cache: Path
    scheduler: str | None = None
    swarm_key: bytes | None = None
    other_upstreams: tuple[str, ...] = ()
    seed: bool = False
    upload_limit: str | None = None
    download_limit: str | None = None
    cache_size: str | None = None
    rack: str = ""
    host_id: str = ""
    advertise: str | None = None
    """Base URL other peers reach this one at (default: the bound address)."""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"bad listen address {addr!r}", hint="use HOST:PORT, e.g. :4001")
    return host.strip("[]") or "0.0.0.0", int(port)


def _bind(addr: str) -> socket.socket:
    host, port = parse_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidArgument(
            f"cannot listen on {addr}: {exc.strerror or exc}",
            hint="pick a free port with --addr HOST:PORT",
        ) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


Closer = Callable[[], Awaitable[None]]


async def _swarm(
    app: web.Application, config: PeerConfig, url: str
) -> tuple[BlobSource, Any, Closer]:
    """The engine and piece routes of :mod:`lamina.p2p.peer` (joined to the scheduler)."""
    from lamina.p2p.daemon.swarm import open_swarm

    return await open_swarm(app, config, url)


async def build_app(config: PeerConfig, url: str) -> tuple[web.Application, Closer]:
    app = web.Application(client_max_size=1 << 20)
    session = new_session(connections=256, read_timeout=120)
    closers: list[Closer] = []
    try:
        if config.scheduler:
            source, counters, close = await _swarm(app, config, url)
            closers.append(close)
        else:
            upstream_source = UpstreamSource(session)
            source, counters = upstream_source, upstream_source.counters
        access = AccessChecker(session)
        mirror = Mirror(
            Upstreams.of(config.upstream, config.other_upstreams), source, session, access
        )
        add_mirror_routes(app, mirror)

        async def metrics(_: web.Request) -> web.Response:
            body = render(counters, mirror.stats, access.upstream_checks)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        app.router.add_get("/metrics", metrics)
        add_catch_all(app, mirror)
    except BaseException:
        for close in closers:
            await close()
        await session.close()
        raise

    async def close_all() -> None:
        for close in reversed(closers):
            await close()
        await session.close()

    return app, close_all


async def _run(config: PeerConfig, ready: Callable[[str], None] | None) -> None:
    loop = asyncio.get_running_loop()
    sock = _bind(config.addr)
    url = config.advertise or _url_of(sock)
    try:
        app, close = await build_app(config, url)
    except BaseException:
        sock.close()
        raise
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(_url_of(sock) if config.advertise is None else config.advertise)
        await stop.wait()
    finally:
        await runner.cleanup()
        await close()
        with contextlib.suppress(OSError):
            sock.close()


def run_peer(config: PeerConfig, ready: Callable[[str], None] | None = None) -> None:
    # uvloop: the peer moves every piece through the loop twice (in from a parent, out
    # to children and the client); pieces go out with lamina.http.sendfile, which
    # works on both loops.
    import uvloop

    uvloop.run(_run(config, ready))
