"""Run the registry: listen on an address (TLS optional), on uvloop when installed, until
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal
import ssl
from collections.abc import Callable

from aiohttp import web

from lamina.errors import InvalidArgument
from lamina.registry.authn.api import Authenticator
from lamina.registry.server.app import CONTEXT_KEY, UPLOAD_TTL, make_app
from lamina.registry.server.limits import ConnectionGuard, Limits, guard_middleware
from lamina.registry.storage import open_storage

log = logging.getLogger("lamina.registry.server")


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (port 0 picks a free one)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"bad listen address {addr!r}", hint="use HOST:PORT, e.g. :5000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            f"cannot load TLS certificate {cert} and key {key}: {exc}",
            hint="give PEM files: --tls-cert CHAIN.pem --tls-key KEY.pem",
        ) from exc
    return ctx


def raise_nofile_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one: every connection (a stalled one too)
    holds a descriptor, and a blob send a second one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft
    return hard


async def _run(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    ready: Callable[[str], None] | None,
    *,
    limits: Limits,
) -> None:
    loop = asyncio.get_running_loop()
    guard = ConnectionGuard(limits, loop)
    app[CONTEXT_KEY].guard = guard
    app.middlewares.append(guard_middleware(guard))
    # aiohttp's own keep-alive timer is only a backstop behind the guard's deadlines.
    backstop = limits.keepalive_timeout + limits.header_timeout
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=backstop)
    await runner.setup()
    server: asyncio.AbstractServer | None = None
    try:
        assert runner.server is not None
        try:
            # Our own listener (not TCPSite) so every connection goes through the guard.
            server = await loop.create_server(
                guard.factory(runner.server), host, port, ssl=ssl_context, backlog=1024,
                reuse_address=True,
            )  # fmt: skip
        except OSError as exc:
            raise InvalidArgument(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="pick a free port with --addr HOST:PORT",
            ) from exc
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            scheme = "https" if ssl_context is not None else "http"
            for sock in server.sockets:
                address = sock.getsockname()
                bound_host, bound_port = address[0], address[1]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                ready(f"{scheme}://{shown}:{bound_port}")
        await stop.wait()
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()


def serve(
    addr: str,
    storage_location: str,
    *,
    authenticator: Authenticator | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    metrics: bool = True,
    upload_ttl: float = UPLOAD_TTL,
    limits: Limits | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the registry on ``addr`` over the storage at ``storage_location`` until
    SIGTERM/SIGINT; ``ready`` is called with each listening URL once it accepts.
    ``limits`` bound what a client may hold (timeouts, connection and upload caps)."""
    if (tls_cert is None) != (tls_key is None):
        raise InvalidArgument("TLS needs both a certificate and a key", hint="--tls-cert --tls-key")
    host, port = parse_addr(addr)
    ssl_context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    storage = open_storage(storage_location)
    limits = limits or Limits()
    nofile = raise_nofile_limit()
    # A connection holds a descriptor, its blob send a second one: keep the cap under
    # what the process may open, so the cap answers 503 before accept() fails.
    fits = max(16, (nofile - 64) // 2)
    if limits.max_connections > fits:
        log.warning("RLIMIT_NOFILE is %d: at most %d connections", nofile, fits)
        limits = dataclasses.replace(limits, max_connections=fits)
    app = make_app(
        storage, authenticator=authenticator, metrics=metrics, upload_ttl=upload_ttl,
        limits=limits,
    )  # fmt: skip
    coro = _run(app, host, port, ssl_context, ready, limits=limits)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
