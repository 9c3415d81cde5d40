"""sendfile(2) of a file range to an aiohttp connection, driven by the event loop.

``loop.sendfile`` is not implemented by uvloop (lamina's servers run on it) and its
fallback reads the file into Python buffers; a thread per transfer lets a few stalled
readers take every thread. Here the socket's writability callback calls sendfile(2)
itself, a bounded slice per turn, and a watchdog ends a transfer that made no progress
for ``idle`` seconds. Used by the registry's blob GETs and the P2P piece server.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

# Bytes one writability callback may send before letting the loop serve others: a fast
# reader on loopback would otherwise take the loop for a whole blob.
_SLICE = 8 << 20


class _LoopSendfile:
    """sendfile(2) from a file to a non-blocking socket, driven by the event loop's
    writability callback: no thread waits on the peer, and a watchdog ends a transfer
    that made no progress for ``idle`` seconds.

    The trade-off: a page of the blob not in the page cache is read from disk by the
    kernel inside sendfile, on the loop. Registry blobs are hot (pushed, then pulled
    many times) and a slice is bounded by _SLICE, while a thread per transfer let any
    64 stalled readers take every thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int, *,
        offset: int, count: int, idle: float,
    ) -> None:  # fmt: skip
        self.loop, self.sock_fd, self.file_fd = loop, sock_fd, file_fd
        self.offset, self.count, self.idle = offset, count, idle
        self.done: asyncio.Future[None] = loop.create_future()
        self.progress = loop.time()
        self.watchdog: asyncio.TimerHandle | None = None
        self.waiting = False

    def start(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pump()
        if not self.done.done():
            self.watchdog = self.loop.call_at(self.progress + self.idle, self.check)

    def pump(self) -> None:
        budget = _SLICE
        try:
            while self.count > 0 and budget > 0:
                sent = os.sendfile(self.sock_fd, self.file_fd, self.offset, min(self.count, budget))
                if sent == 0:
                    raise ConnectionResetError("blob file ended early")
                self.offset += sent
                self.count -= sent
                budget -= sent
                self.progress = self.loop.time()
        except BlockingIOError:
            pass
        except OSError as exc:
            self.finish(exc)
            return
        if self.count <= 0:
            self.finish(None)
        elif not self.waiting:
            # Level-triggered: called again on every loop turn the socket has room.
            self.loop.add_writer(self.sock_fd, self.pump)
            self.waiting = True

    def check(self) -> None:
        self.watchdog = None
        if self.done.done():
            return
        if self.transport.is_closing():
            self.finish(ConnectionResetError("connection closed"))
        elif self.loop.time() - self.progress >= self.idle:
            self.finish(TimeoutError(f"peer took no byte for {self.idle:g}s"))
        else:
            self.watchdog = self.loop.call_at(self.progress + self.idle, self.check)

    def finish(self, exc: BaseException | None) -> None:
        if self.waiting:
            self.loop.remove_writer(self.sock_fd)
            self.waiting = False
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


async def _flushed(transport: asyncio.BaseTransport, idle: float) -> None:
    """Wait until the transport's buffer (the status line and headers) is on the wire."""
    # uvloop's transports do not derive from asyncio.WriteTransport, but have its methods
    writer = cast(asyncio.WriteTransport, transport)
    waited = 0.0
    while writer.get_write_buffer_size():
        if transport.is_closing() or waited > idle:
            raise ConnectionResetError("connection lost before the body")
        await asyncio.sleep(0.001)
        waited += 0.001


async def send_file_range(
    transport: asyncio.BaseTransport, file_fd: int, *, offset: int, count: int, idle: float
) -> None:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` as the body of a response
    whose headers were just prepared on ``transport``."""
    await _flushed(transport, idle)
    # HTTP/1.1 answers one request at a time, so once the headers are out nothing else
    # writes to this socket until the body is sent. A duplicate descriptor: the loop
    # refuses a writer on a transport's own descriptor, and if the loop closes the
    # connection meanwhile, the number it frees may be reused by a new connection; the
    # duplicate keeps this socket alive (and ours) until we are done.
    sock_fd = os.dup(transport.get_extra_info("socket").fileno())
    try:
        send = _LoopSendfile(
            asyncio.get_running_loop(), sock_fd, file_fd, offset=offset, count=count, idle=idle
        )
        send.start(transport)
        try:
            await send.done
        finally:
            send.finish(ConnectionResetError("cancelled"))
    finally:
        os.close(sock_fd)
