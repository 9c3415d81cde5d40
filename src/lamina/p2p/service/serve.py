"""Start the scheduler: :func:`start_scheduler` (tests, in a running loop) and
:func:`run_scheduler` (the CLI: blocks under uvloop until SIGTERM or SIGINT).

The service's clock is wall time, not a monotonic one: schedulers over one Redis
compare host heartbeats written by each other, and task tokens carry unix expiries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web

from lamina.errors import InvalidArgument
from lamina.p2p.api import HOST_HEARTBEAT, Clock
from lamina.p2p.service.app import SchedulerApp
from lamina.p2p.service.stores import MemoryStore, StateStore

log = logging.getLogger("lamina.p2p.scheduler")


class WallClock:
    def now(self) -> float:
        return time.time()


@dataclass
class RunningScheduler:
    host: str
    port: int
    app: SchedulerApp
    runner: web.AppRunner
    expiry: asyncio.Task[None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        self.expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.expiry
        await self.runner.cleanup()
        await self.app.store.close()


async def _expire_forever(store: StateStore, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            dead = await store.expire_hosts()
        except (OSError, ConnectionError) as exc:  # a Redis hiccup: try next round
            log.warning("host expiry failed: %s", exc)
            continue
        if dead:
            log.info("hosts gone silent, their peers left: %s", ", ".join(dead))


async def start_scheduler(
    swarm_key: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    redis_url: str | None = None,
    back_to_source_limit: int = 1,
    clock: Clock | None = None,
    expiry_every: float = HOST_HEARTBEAT,
) -> RunningScheduler:
    """Serve on ``host:port`` (0: a free port; read ``.port``); ``await .close()``."""
    clock = clock or WallClock()
    store: StateStore
    if redis_url:
        from lamina.p2p.service.redis_store import RedisStore

        store = await RedisStore.connect(redis_url, clock, swarm_key, back_to_source_limit)
    else:
        store = MemoryStore(clock, swarm_key, back_to_source_limit)
    app = SchedulerApp(store, swarm_key)
    runner = web.AppRunner(app.make(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await store.close()
        raise InvalidArgument(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another --addr (or free the port)",
        ) from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    real_port = sockets[0].getsockname()[1] if sockets else port
    expiry = asyncio.ensure_future(_expire_forever(store, expiry_every))
    return RunningScheduler(host, real_port, app, runner, expiry)


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidArgument(f"bad --addr {addr!r}", hint="use HOST:PORT, e.g. 0.0.0.0:8002")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_scheduler(
    addr: str,
    swarm_key: bytes,
    redis_url: str | None = None,
    back_to_source_limit: int = 1,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    host, port = parse_addr(addr)

    async def main() -> None:
        running = await start_scheduler(
            swarm_key,
            host,
            port,
            redis_url=redis_url,
            back_to_source_limit=back_to_source_limit,
        )
        log.info("scheduler listening on %s", running.url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await running.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main())
