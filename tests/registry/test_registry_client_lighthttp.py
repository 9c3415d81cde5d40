"""lighthttp, the client's small HTTP/1.1 client for plain-HTTP registries, against a
raw asyncio server on loopback that frames answers every way RFC 9112 allows: by
Content-Length, chunked (with extensions and trailers), by closing the connection; that
cuts a body short, closes kept-alive connections behind the client's back, and
redirects (which the transport hands to aiohttp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from lamina.errors import ToolError
from lamina.registry.client.lighthttp import IncompleteBody, LightPool, LightResponse
from lamina.registry.client.transport import Transport

BODY = bytes(range(256)) * 40  # 10240 bytes


def _answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + (
        body
    )


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; False: close the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
    body = b"" if method == "HEAD" else BODY
    length = f"Content-Length: {len(BODY)}"
    if path == "/fixed":
        writer.write(_answer("200 OK", [length], body))
    elif path == "/late":  # the body comes after the client started waiting for it
        writer.write(_answer("200 OK", [length]))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body)
    elif path == "/then-close":  # keep-alive by the headers, yet the server hangs up
        writer.write(_answer("200 OK", [length], body))
        return False
    elif path == "/close-delimited":
        writer.write(_answer("200 OK", ["Connection: close"], body))
        return False
    elif path == "/chunked":
        parts = [BODY[:1], BODY[1:5000], BODY[5000:]]
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
        writer.write(
            _answer("200 OK", ["Transfer-Encoding: chunked"])
            + chunks
            + b"0\r\nX-Trailer: yes\r\n\r\n"
        )
    elif path == "/cut":
        writer.write(_answer("200 OK", [length], BODY[:5000]))
        return False
    elif path == "/redirect":
        writer.write(_answer("307 Temporary Redirect", ["Location: /fixed", "Content-Length: 0"]))
    else:
        writer.write(_answer("404 Not Found", ["Content-Length: 0"]))
    return True


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[str, list[int]]]:
    """(host:port, [connections accepted])."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while await _serve(reader, writer):
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}", accepted


async def _get(pool: LightPool, url: str, method: str = "GET") -> tuple[LightResponse, bytes]:
    resp = await pool.request(method, url, {})
    try:
        return resp, await resp.content.read()
    finally:
        resp.release()


def _run(test: Callable[[str, list[int], LightPool], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _server() as (host, accepted):
            pool = LightPool(4)
            try:
                await test(host, accepted, pool)
            finally:
                await pool.close()

    asyncio.run(main())


def test_fixed_length_bodies_reuse_one_connection() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        for _ in range(3):
            resp, body = await _get(pool, f"http://{host}/fixed")
            assert (resp.status, body, resp.content_length) == (200, BODY, len(BODY))
        resp, body = await _get(pool, f"http://{host}/fixed", "HEAD")
        assert (resp.status, body, resp.content_length) == (200, b"", len(BODY))
        resp, body = await _get(pool, f"http://{host}/fixed")
        assert body == BODY
        assert accepted == [1]

    _run(test)


def test_chunked_and_close_delimited_bodies() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        resp, body = await _get(pool, f"http://{host}/chunked")
        assert body == BODY and resp.content.at_eof()
        resp, body = await _get(pool, f"http://{host}/close-delimited")
        assert body == BODY
        resp, body = await _get(pool, f"http://{host}/chunked")  # after the trailer: reused
        assert body == BODY
        assert accepted == [2]  # the close-delimited one could not be kept

    _run(test)


def test_a_connection_the_server_closed_is_replaced() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        _, body = await _get(pool, f"http://{host}/then-close")
        assert body == BODY
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection idles
        _, body = await _get(pool, f"http://{host}/fixed")
        assert body == BODY
        assert accepted == [2]

    _run(test)


def test_a_body_cut_short_raises_a_connection_error() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        resp = await pool.request("GET", f"http://{host}/cut", {})
        got = b""
        with pytest.raises(IncompleteBody):
            async for piece, _ in resp.content.iter_chunks():
                got += piece
        resp.release()
        assert got == BODY[:5000]  # what did arrive is handed over (a Range resume's offset)

    _run(test)


def test_readinto_fills_the_callers_buffer_and_the_connection_is_reused() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        for size in (len(BODY), 3000, 1):  # exactly the body (reading pauses), smaller
            resp = await pool.request("GET", f"http://{host}/late", {})
            buffer = memoryview(bytearray(size))
            got = bytearray()
            while n := await resp.content.readinto(buffer):
                got += buffer[:n]
            resp.release()
            assert bytes(got) == BODY
        for path in ("/chunked", "/close-delimited"):
            resp = await pool.request("GET", f"http://{host}{path}", {})
            buffer, got = memoryview(bytearray(4000)), bytearray()
            while n := await resp.content.readinto(buffer):
                got += buffer[:n]
            resp.release()
            assert bytes(got) == BODY
        # a plain read after a readinto that ended with the buffer full: not stuck
        _, body = await asyncio.wait_for(_get(pool, f"http://{host}/fixed"), 5)
        assert body == BODY
        assert accepted == [2]  # one more for the close-delimited answer

    _run(test)


def test_a_header_with_a_line_break_is_refused() -> None:
    async def test(host: str, accepted: list[int], pool: LightPool) -> None:
        with pytest.raises(ToolError, match="line break"):
            await pool.request("GET", f"http://{host}/fixed", {"Authorization": "x\r\nEvil: 1"})
        _, body = await _get(pool, f"http://{host}/fixed")  # the slot was given back
        assert body == BODY
        assert accepted == [1]

    _run(test)


def test_a_redirect_is_followed_hop_by_hop_by_lighthttp() -> None:
    # the transport follows redirects itself (credentials stay on their origin), so a
    # plain-http hop is lighthttp's as the first one was
    async def main() -> None:
        async with _server() as (host, _), Transport(lambda r: None) as transport:
            url = f"http://{host}/redirect"
            async with transport.request("GET", url, registry=host) as resp:
                assert resp.status == 200
                assert await resp.content.read(1 << 20) == BODY
                assert type(resp).__module__.endswith("lighthttp")
                assert resp.url.path == "/fixed"

    asyncio.run(main())
