"""lamina.http.redirects: where a redirect goes, and a loop ends in a clear error
(``ADD <url>`` against a real aiohttp server on loopback, in a thread of its own)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from lamina.errors import LaminaError, ToolError


@pytest.fixture
def looping_server() -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths asked) of a server whose /loop/N redirects to /loop/N+1 forever
    and whose /once redirects to /file."""
    asked: list[str] = []
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def handle(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path.startswith("/loop/"):
            n = int(request.path.rsplit("/", 1)[1])
            return web.Response(status=302, headers={"Location": f"/loop/{n + 1}"})
        if request.path == "/once":
            return web.Response(status=301, headers={"Location": "/file"})
        return web.Response(body=b"hello")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = runner.addresses[0][1]
        stop = asyncio.Event()
        holder["stop"] = stop
        holder["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{holder['port']}", asked
    loop = holder["loop"]
    stop = holder["stop"]
    assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_add_url_redirect_loop_is_a_clear_error(
    tmp_path: Path, looping_server: tuple[str, list[str]]
) -> None:
    from lamina.builder.files.addurl import fetch_url

    base, asked = looping_server
    with pytest.raises(LaminaError) as caught:
        fetch_url(f"{base}/loop/0", str(tmp_path))
    assert isinstance(caught.value, ToolError)
    assert "more than 10 redirects" in caught.value.message
    assert caught.value.hint
    assert len(asked) == 11  # the first request and ten redirects, then it stops
    assert list(tmp_path.iterdir()) == []


def test_add_url_follows_a_short_redirect(
    tmp_path: Path, looping_server: tuple[str, list[str]]
) -> None:
    from lamina.builder.files.addurl import fetch_url

    base, _ = looping_server
    path = fetch_url(f"{base}/once", str(tmp_path))
    assert Path(path).read_bytes() == b"hello"


def test_next_hop_follows_rfc_9110() -> None:
    from lamina.http.redirects import next_hop

    hop = next_hop("PUT", "https://r/v2/a", 307, "/v2/b?x=1")
    assert (hop.method, hop.url, hop.keep_body) == ("PUT", "https://r/v2/b?x=1", True)
    hop = next_hop("POST", "https://r/v2/a", 302, "https://s3/b")
    assert (hop.method, hop.keep_body) == ("GET", False)
    assert next_hop("HEAD", "http://r/a", 303, "b").method == "HEAD"
    with pytest.raises(ToolError, match="not an http"):
        next_hop("GET", "http://r/a", 302, "file:///etc/passwd")
    with pytest.raises(ToolError, match="without a Location"):
        next_hop("GET", "http://r/a", 302, None)
