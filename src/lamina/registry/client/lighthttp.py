"""A small HTTP/1.1 client for the GETs and HEADs a pull sends to a plain-HTTP registry.

Importing aiohttp costs more than a whole pull of a small image from a registry on
loopback, where most pulls in development and CI go. So the transport answers a GET or
HEAD without a body to a plain-``http`` registry itself, over an asyncio
``BufferedProtocol``, and imports aiohttp only for the rest (TLS, uploads, token
servers, redirects): see ``transport.py``. The responses offer the part of aiohttp's
``ClientResponse`` the client reads (:class:`~.transport.Response`), and
:meth:`Body.readinto`, which has the event loop receive a blob straight into the
caller's buffer: no allocation and no copy per piece (the largest cost left of a pull).

RFC 9112 framing: a body is delimited by ``Transfer-Encoding: chunked`` (section 7.1),
else ``Content-Length`` (6.2), else the end of the connection (6.3); a HEAD and a
1xx/204/304 answer have none (6.3). Connections are kept alive and reused unless an
answer says ``Connection: close`` (9.3). A body cut short raises
:class:`IncompleteBody`, a :class:`ConnectionError`, so the callers' network-error
handling (retry, Range resume) treats it as aiohttp's payload errors.

Why it is kept (ARCHITECTURE.md: a hand-written stack needs a benchmark that shows why):
``.venv/bin/python -m bench http_client`` runs the same ``RegistryClient`` code over
this client and over aiohttp (``Transport.use_lighthttp``) against a lamina registry
on loopback. Measured here (2 cores shared with a load average of 14-18, 5-7 rounds
interleaved, three runs), lighthttp over aiohttp: a whole ``lamina pull`` of a small
image x1.7-1.9 faster (1.11 s against 2.05 s median; importing aiohttp is most of the
difference), manifest GETs and blob HEADs x1.3-1.5 the requests/s (423 against 293
req/s), peak RSS 30-33 MB against 39-42 MB. A 256 MiB blob fetched once per process was
within this machine's noise (x0.65-0.89, rounds spread 3x); fetched four times per
process, lighthttp led in 4 of 5 rounds, x1.19 (1061 against 888 MiB/s).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import cast
from urllib.parse import SplitResult, urlsplit

from lamina.errors import ToolError

# Caps on what is searched for a line end: a registry's answer head is well under 4 KiB
# (aiohttp allows 8 KiB a line), and the caps bound the work a server trickling the
# head byte by byte can cause (each piece is joined to the unsearched rest).
_HEAD_LIMIT = 32 << 10  # status line and headers
_LINE_LIMIT = 4 << 10  # a chunk-size line or a trailer field
_READ = 1 << 20  # the most one body read returns
_BUFFER_LIMIT = 2 << 20  # unread pieces past which the socket is not read
_RECEIVE = 256 << 10  # the receive buffer of a connection, outside readinto
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0


class IncompleteBody(ConnectionError):
    """The connection ended or broke before the whole answer arrived."""


class CannotConnect(ConnectionError):
    """No connection could be made; ``dns``: the name does not resolve."""

    def __init__(self, message: str, *, dns: bool = False) -> None:
        super().__init__(message)
        self.dns = dns


class Headers(Mapping[str, str]):
    """Response headers, looked up without regard to case; the first of a repeated
    header wins (as ``aiohttp``'s ``.get``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._map: dict[str, str] = {}
        for name, value in pairs:
            self._map.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


class _Conn(asyncio.BufferedProtocol):
    """One connection. While a body is read with :meth:`readinto`, the event loop
    receives straight into the caller's buffer (no copy, no allocation); otherwise
    what arrives is kept as pieces (one copy out of a reused receive buffer), and
    reading stops while 2 MiB of them wait unread."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._scratch = memoryview(bytearray(_RECEIVE))
        self._target: memoryview | None = None  # the buffer a readinto waits to fill
        self._got = 0  # bytes received into it
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.BufferedProtocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but offer its methods
        self._transport = cast("asyncio.Transport", transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return self._target[self._got :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is not None:
            self._got += nbytes
            if self._got == len(self._target):
                # full: hold the rest in the socket until the reader offers the next
                # buffer (else it would arrive as pieces, to be copied)
                self._target = None
                self._pause()
            self._wake()
            return
        self._pieces.append(bytes(self._scratch[:nbytes]))
        self._buffered += nbytes
        if self._buffered > _BUFFER_LIMIT:
            self._pause()
        self._wake()

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for Body and LightPool ---------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self._eof and not self._pieces and self._transport is not None

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise IncompleteBody("the connection is closed")
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def _more(self) -> None:
        """Wait for data or the end; raise if the connection broke."""
        if self._eof:
            if self._error is not None:
                raise IncompleteBody(f"the connection broke: {self._error}") from self._error
            raise IncompleteBody("the connection ended early")
        # waiting means nothing unread is held: reading may be paused only because a
        # readinto buffer filled up
        self._resume()
        self._waiter = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(READ_TIMEOUT):
            await self._waiter

    def _take(self, piece: bytes) -> bytes:
        self._consumed(len(piece))
        return piece

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._buffered <= _BUFFER_LIMIT // 2:
            self._resume()

    async def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` (> 0) bytes into ``view``; 0 at a clean end."""
        while True:
            if self._pieces:
                # all that waits, so the next call finds none and receives in place
                n = 0
                while self._pieces and n < len(view):
                    piece = self._pieces[0]
                    k = min(len(view) - n, len(piece))
                    view[n : n + k] = memoryview(piece)[:k]
                    if k == len(piece):
                        self._pieces.popleft()
                    else:
                        self._pieces[0] = piece[k:]
                    n += k
                self._consumed(n)
                return n
            if self._eof:
                if self._error is not None:
                    raise IncompleteBody(f"the connection broke: {self._error}") from self._error
                return 0
            self._target, self._got = view, 0
            try:
                await self._more()
            finally:
                self._target = None
            if self._got:
                return self._got

    async def read(self, n: int) -> bytes:
        """Up to ``n`` (> 0) bytes as they arrived; ``b""`` at a clean end."""
        while not self._pieces:
            if self._eof and self._error is None:
                return b""
            await self._more()
        piece = self._pieces[0]
        if len(piece) <= n:
            self._pieces.popleft()
            return self._take(piece)
        self._pieces[0] = piece[n:]
        return self._take(piece[:n])

    async def readuntil(self, separator: bytes, limit: int) -> bytes:
        """The bytes up to and including ``separator`` (at most ``limit`` of them)."""
        while True:
            if self._pieces:
                first = self._pieces[0]
                end = first.find(separator)
                if 0 <= end < limit:
                    end += len(separator)
                    if end == len(first):
                        self._pieces.popleft()
                    else:
                        self._pieces[0] = first[end:]
                    return self._take(first[:end])
                if len(first) >= limit:
                    raise IncompleteBody("a header line is too long")
                if len(self._pieces) > 1:  # the separator may straddle two pieces
                    self._pieces[0] = first + self._pieces[1]
                    del self._pieces[1]
                    continue
            await self._more()


class Body:
    """The body of a :class:`LightResponse` (aiohttp's ``StreamReader`` subset)."""

    def __init__(self, conn: _Conn, length: int | None, chunked: bool) -> None:
        self._conn = conn
        self._chunked = chunked
        # bytes left: of the body (Content-Length), of the current chunk (chunked,
        # 0 = read the next size line), None = until the connection ends
        self._left = length
        self._eof = length == 0 and not chunked
        if chunked:
            self._left = 0

    def at_eof(self) -> bool:
        return self._eof

    async def _fill(self, n: int) -> bytes:
        conn = self._conn
        if self._chunked and self._left == 0:
            await self._next_chunk()
            if self._eof:
                return b""
        if self._left is None:  # until the connection ends
            data = await conn.read(n)
            self._eof = not data
            return data
        data = await conn.read(min(n, self._left))
        if not data:
            raise IncompleteBody(f"the connection ended {self._left} bytes short")
        self._left -= len(data)
        if self._left == 0:
            if self._chunked:
                await self._line()  # the CRLF after the chunk's data
            else:
                self._eof = True
        return data

    async def _line(self) -> bytes:
        line = await self._conn.readuntil(b"\n", _LINE_LIMIT)
        return line.rstrip(b"\r\n")

    async def _next_chunk(self) -> None:
        size_text = (await self._line()).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise IncompleteBody(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise IncompleteBody("negative chunk size")
        if size == 0:
            while await self._line():  # trailer fields, up to the empty line
                pass
            self._eof = True
        self._left = size

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest if ``n`` < 0); ``b""`` at the end."""
        if n < 0:
            parts = []
            while not self._eof:
                parts.append(await self._fill(_READ))
            return b"".join(parts)
        if self._eof or n == 0:
            return b""
        return await self._fill(n)

    async def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes of the body into ``view``; 0 at its end. Outside
        chunked framing the bytes land there straight from the socket."""
        if self._eof or not view:
            return 0
        if self._chunked:
            data = await self._fill(len(view))
            view[: len(data)] = data
            return len(data)
        if self._left is None:  # until the connection ends
            n = await self._conn.readinto(view)
            self._eof = n == 0
            return n
        n = await self._conn.readinto(view[: self._left])
        if not n:
            raise IncompleteBody(f"the connection ended {self._left} bytes short")
        self._left -= n
        self._eof = self._left == 0
        return n

    async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """The body in pieces as they arrive, as ``(data, False)`` pairs."""
        while not self._eof:
            data = await self._fill(_READ)
            if data:
                yield data, False


class LightResponse:
    def __init__(
        self,
        pool: LightPool,
        key: tuple[str, int],
        conn: _Conn,
        *,
        url: SplitResult,
        status: int,
        headers: Headers,
        content: Body,
        reusable: bool,
    ) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Conn | None = conn
        self.url = url
        self.status = status
        self.headers = headers
        self.content = content
        self._reusable = reusable

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length", "")
        return int(value) if value.isdigit() else None

    def release(self) -> None:
        """Give the connection back (kept if the body was read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.put_back(self._key, conn, self._reusable and self.content.at_eof())


class LightPool:
    """Kept-alive connections per (host, port), at most ``limit`` in use at once."""

    def __init__(self, limit: int) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._slots = asyncio.Semaphore(limit)

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def put_back(self, key: tuple[str, int], conn: _Conn, reusable: bool) -> None:
        if reusable and conn.usable:
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
        self._slots.release()

    async def request(self, method: str, url: str, headers: Mapping[str, str]) -> LightResponse:
        """Send ``method url`` (no body) and read the answer's head; the caller reads
        the body from ``.content`` and must ``release()`` the response."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ToolError(f"the plain-HTTP client cannot fetch {url}")
        key = (parts.hostname, parts.port or 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if any(c in line for line in lines for c in "\r\n\0"):
            # a header value from elsewhere (a token server's token) must not be able
            # to add headers or a second request (RFC 9110 section 5.5)
            raise ToolError(
                f"refusing to send {method} {url}: a header holds a line break",
                hint="the registry or its token server sent a malformed value",
            )
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        await self._slots.acquire()
        try:
            while True:
                idle = self._idle.get(key, [])
                conn = None
                while idle and conn is None:
                    conn = idle.pop()
                    if not conn.usable:  # the server closed it meanwhile
                        conn.close()
                        conn = None
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(key)
                try:
                    return await self._exchange(conn, key, parts, method, head)
                except ConnectionError:
                    conn.close()
                    # a kept-alive connection the server closed meanwhile: once more on
                    # a new one (nothing was answered, so nothing was done)
                    if not reused:
                        raise
                except BaseException:
                    conn.close()
                    raise
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await loop.create_connection(_Conn, *key)
        except ConnectionError:
            raise
        except OSError as exc:  # no route, a name that does not resolve
            raise CannotConnect(str(exc), dns=isinstance(exc, socket.gaierror)) from exc
        return conn

    async def _exchange(
        self, conn: _Conn, key: tuple[str, int], url: SplitResult, method: str, head: bytes
    ) -> LightResponse:
        conn.write(head)
        raw = await conn.readuntil(b"\r\n\r\n", _HEAD_LIMIT)
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise IncompleteBody(f"not an HTTP/1.x answer: {status_line[:60]!r}")
        status = int(code)
        pairs = []
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                pairs.append((name.strip(), value.strip()))
        headers = Headers(pairs)
        connection = headers.get("Connection", "").lower()
        reusable = version == "HTTP/1.1" and "close" not in connection
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length_text = headers.get("Content-Length")
        length: int | None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False
        elif chunked:
            length = None
        elif length_text is not None:
            if not length_text.isdigit():
                raise IncompleteBody(f"bad Content-Length {length_text[:20]!r}")
            length = int(length_text)
        else:
            length, reusable = None, False  # until the connection ends
        body = Body(conn, length, chunked)
        return LightResponse(
            self,
            key,
            conn,
            url=url,
            status=status,
            headers=headers,
            content=body,
            reusable=reusable,
        )


async def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked: this
    only tells an insecure registry's scheme, docker's insecure-registry rule)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    writer.close()
    return True
