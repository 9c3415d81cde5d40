"""What one client may hold of the registry server: timeouts and caps.

A stalled peer must cost a file descriptor, never a worker thread, and never for long:

- ``header_timeout``: a request head (request line and headers) must arrive whole
  within this many seconds of its first byte (or of the connection opening), so a
  client trickling headers one byte a second is cut off;
- ``keepalive_timeout``: an idle persistent connection between requests is closed
  after this long;
- ``idle_timeout``: a request whose body makes no progress (upload) or whose answer
  is not taken (a blob GET the peer stopped reading) for this long is dropped;
- ``max_connections``: connections over this number get a canned 503 with
  ``Retry-After`` and are closed before aiohttp sees them;
- ``max_uploads_per_client``: concurrent upload bodies per peer address; one more
  answers 429 ``TOOMANYREQUESTS`` with ``Retry-After``.

:class:`ConnectionGuard` enforces the first two and the connection cap by wrapping
each aiohttp protocol object (the asyncio Protocol interface only, so it works on
uvloop and the stock loop alike); the dispatcher tells it when a request is being
handled (``busy``) and when the connection waits for the next one (``idle``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from lamina.errors import InvalidArgument

log = logging.getLogger("lamina.registry.server")

RETRY_AFTER = "1"  # seconds: a cap is hit by a burst, not by a steady state


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 20.0
    keepalive_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_connections: int = 8192
    max_uploads_per_client: int = 32

    def __post_init__(self) -> None:
        for name in ("header_timeout", "keepalive_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be > 0", hint="give seconds, e.g. 30")
        if self.max_connections < 1 or self.max_uploads_per_client < 1:
            raise InvalidArgument("connection and upload caps must be >= 1")


def _busy_answer() -> bytes:
    body = json.dumps(
        {"errors": [{"code": "TOOMANYREQUESTS", "message": "too many connections"}]},
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY_ANSWER = _busy_answer()

# connection states
_WAITING = 0  # no byte of the next request yet: keep-alive (or opening) deadline
_HEAD = 1  # some bytes of a request head: header deadline
_BUSY = 2  # a handler runs: its own read/write timeouts apply


class _Guarded(asyncio.Protocol):
    """One connection: forwards every Protocol call to aiohttp's handler and keeps the
    deadline of the state it is in."""

    __slots__ = ("_deadline", "_guard", "_inner", "_state", "_timer", "_timer_at", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = inner
        self._transport: asyncio.Transport | None = None
        self._state = _WAITING
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        guard = self._guard
        if len(guard.open) >= guard.limits.max_connections:
            # Refused before aiohttp builds anything for it: costs a write and a close.
            self._inner = None
            transport.write(BUSY_ANSWER)
            transport.close()
            guard.refused += 1
            return
        self._transport = transport
        assert self._inner is not None
        guard.open[self._inner] = self
        self._arm(guard.limits.header_timeout)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._state == _WAITING:
            self._state = _HEAD
            self._arm(self._guard.limits.header_timeout)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if inner is not None:
            self._guard.open.pop(inner, None)
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- deadlines -------------------------------------------------------------------
    def busy(self) -> None:
        self._state = _BUSY

    def idle(self) -> None:
        self._state = _WAITING
        self._arm(self._guard.limits.keepalive_timeout)

    def _arm(self, seconds: float) -> None:
        loop = self._guard.loop
        self._deadline = loop.time() + seconds
        # One timer per connection, moved forward lazily: re-arming on every request
        # costs a float store, not a timer-heap operation; only an earlier deadline
        # (a header deadline inside a keep-alive one) moves the timer.
        if self._timer is not None and self._timer_at > self._deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer_at = self._deadline
            self._timer = loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._inner is None or self._state == _BUSY:
            return  # a busy connection is re-armed by idle()
        loop = self._guard.loop
        if loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._state == _HEAD:
                self._guard.header_timeouts += 1
                peer = transport.get_extra_info("peername")
                log.info("closing %s: request head not complete in time", peer)
            else:
                self._guard.keepalive_closes += 1
            transport.abort()


class ConnectionGuard:
    """The deadlines and the connection cap of one listening server."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.open: dict[object, _Guarded] = {}  # aiohttp handler -> its guard
        self.refused = 0
        self.header_timeouts = 0
        self.keepalive_closes = 0

    def factory(self, make: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's ``make``."""
        return lambda: _Guarded(self, make())

    def busy(self, handler: object) -> None:
        conn = self.open.get(handler)
        if conn is not None:
            conn.busy()

    def idle(self, handler: object) -> None:
        conn = self.open.get(handler)
        if conn is not None:
            conn.idle()


def guard_middleware(guard: ConnectionGuard) -> Any:
    """Tell the guard when a connection is inside a request (its handler's own timeouts
    apply) and when it waits for the next one (keep-alive, then header deadlines)."""

    @web.middleware
    async def track(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        guard.busy(request.protocol)
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        finally:
            guard.idle(request.protocol)

    return track
