"""lamina.http: the pieces the registry client and ``ADD <url>`` share."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from lamina import http as lhttp
from lamina.errors import ToolError


def test_importing_the_package_does_not_import_aiohttp() -> None:
    code = (
        "import sys, lamina.http as h\n"
        "assert 'aiohttp' not in sys.modules\n"
        "assert h.network_errors() == (ConnectionError, TimeoutError)\n"
        "assert not h.is_dns_error(OSError()) and not h.is_certificate_error(OSError())\n"
        "import lamina.http.tls\n"
        "import aiohttp\n"
        "assert aiohttp.ClientPayloadError in h.network_errors()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backoff_grows_is_capped_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    backoff = lhttp.Backoff(attempts=4, base=1.0, cap=3.0)

    async def go() -> None:
        while backoff.more():
            await backoff.wait()

    asyncio.run(go())
    assert len(slept) == 4 and not backoff.more()
    # jitter keeps each delay within [half, whole] of 1, 2, 3 (capped), 3
    for delay, whole in zip(slept, (1.0, 2.0, 3.0, 3.0), strict=True):
        assert whole / 2 <= delay <= whole
    slept.clear()
    asyncio.run(lhttp.Backoff(base=0.01).wait("7"))
    assert slept == [7.0]
    asyncio.run(lhttp.Backoff(base=0.01).wait("3600"))
    assert slept[-1] == 30.0  # a server cannot park the client for an hour


def test_errors_name_what_failed() -> None:
    err = lhttp.network_error("GET", "http://h/x", ConnectionResetError())
    assert isinstance(err, ToolError)
    assert err.message == "GET http://h/x failed after retries: ConnectionResetError"
    cert = lhttp.certificate_error("h:443", ValueError("self-signed"), hint="trust it")
    assert "does not trust: self-signed" in cert.message and cert.hint == "trust it"


def test_session_asks_for_bytes_as_sent() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc")
        await writer.drain()
        writer.close()

    async def go() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with (
            server,
            lhttp.new_session(connections=2) as session,
            session.get(f"http://127.0.0.1:{port}/") as resp,
        ):
            return await resp.read()

    # not gzip at all: a client that decoded it would fail
    assert asyncio.run(go()) == b"abc"
    head = seen[0].decode().lower()
    assert "accept-encoding: identity" in head and "user-agent: lamina" in head
