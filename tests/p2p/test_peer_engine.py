"""PeerEngine against the real scheduler service and a real origin, all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from peer_harness import KEY, Blob, make_blob

from lamina.p2p import api
from lamina.p2p.client import HttpSchedulerClient
from lamina.p2p.peer.engine import PeerEngine
from lamina.p2p.peer.server import UploadGate, add_piece_routes
from lamina.p2p.peer.storage import PieceStore
from lamina.p2p.service.serve import start_scheduler

MiB = 1 << 20


@dataclass
class Origin:
    blob: Blob
    url: str
    sent: int = 0
    requests: int = 0


@contextlib.asynccontextmanager
async def origin(blob: Blob, rate: float = 40 * MiB) -> AsyncIterator[Origin]:
    """A tiny upstream serving one blob at ``rate``, counting every byte it sends."""
    state = Origin(blob, "")

    async def get(request: web.Request) -> web.StreamResponse:
        state.requests += 1
        resp = web.StreamResponse()
        resp.content_length = blob.size
        await resp.prepare(request)
        for at in range(0, blob.size, MiB):
            chunk = blob.data[at : at + MiB]
            await resp.write(chunk)
            state.sent += len(chunk)
            await asyncio.sleep(len(chunk) / rate)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v2/x/blobs/{digest}", get)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v2/x/blobs/{blob.task}"
    try:
        yield state
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def peer(
    root: Path, name: str, scheduler_url: str, **engine: object
) -> AsyncIterator[PeerEngine]:
    """One peer: store, engine and piece server, as the front wires them."""
    store = PieceStore(root / name, durable=False)
    app = web.Application()
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    client = HttpSchedulerClient(scheduler_url, KEY, attempts=1, timeout=3)
    # the piece server's port must be known before the host is announced
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host = api.HostInfo(name, f"http://127.0.0.1:{sock.getsockname()[1]}")
    eng = PeerEngine(store, client, host, KEY, **engine)  # type: ignore[arg-type]
    add_piece_routes(app, store, KEY, UploadGate(), on_seed=eng.seed, counters=eng.counters)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()
        await runner.cleanup()
        await client.close()


async def read(
    eng: PeerEngine, blob: Blob, url: str, start: int = 0, end: int | None = None
) -> bytes:
    out = bytearray()
    async for chunk in eng.open(api.BlobRequest(blob.task, blob.size, url, {}, start, end)):
        out += chunk
    return bytes(out)


def test_a_swarm_of_three_fetches_the_blob_from_the_origin_once(tmp_path: Path) -> None:
    blob = make_blob(20 * MiB)

    async def go() -> None:
        sched = await start_scheduler(KEY)
        try:
            async with (
                origin(blob) as up,
                peer(tmp_path, "first", sched.url) as first,
                peer(tmp_path, "second", sched.url) as second,
                peer(tmp_path, "third", sched.url) as third,
            ):
                reading = asyncio.ensure_future(read(first, blob, up.url))
                await asyncio.sleep(0.2)  # the first goes back to source; the others join it
                results = await asyncio.wait_for(
                    asyncio.gather(reading, read(second, blob, up.url), read(third, blob, up.url)),
                    60,
                )
                assert all(r == blob.data for r in results)
                assert up.requests == 1 and up.sent == blob.size  # the origin sent it once
                assert first.counters.bytes_from_source == blob.size
                for child in (second, third):
                    assert child.counters.bytes_from_source == 0
                    assert child.counters.bytes_from_peers == blob.size
                uploaded = sum(e.counters.bytes_uploaded for e in (first, second, third))
                assert uploaded >= 2 * blob.size
                # the children's pieces came while the first was still downloading
                assert first.counters.bytes_uploaded > 0
                status = await first.scheduler.status()
                (task,) = status["tasks"]
                assert task["state"] == "succeeded"
                # a range of a cached blob comes from disk, no scheduler, no origin
                part = await read(second, blob, up.url, 5 * MiB + 3, 9 * MiB)
                assert part == blob.data[5 * MiB + 3 : 9 * MiB] and up.requests == 1
        finally:
            await sched.close()

    asyncio.run(go())


def test_an_unreachable_scheduler_sends_the_peer_to_the_origin_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob = make_blob(9 * MiB)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens here

    async def go() -> None:
        async with origin(blob) as up, peer(tmp_path, "alone", nowhere, heartbeat=False) as eng:
            with caplog.at_level(logging.WARNING, logger="lamina.p2p.peer.engine"):
                assert await read(eng, blob, up.url) == blob.data
            lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(lines) == 1
            assert lines[0].startswith(
                f"scheduler unreachable: fetching {blob.task} from the origin"
            )
            assert eng.counters.source_fallbacks == 1
            assert eng.store.has_blob(blob.task)
            # once cached it is served from disk: no scheduler, no origin
            assert await read(eng, blob, up.url, 1, 2) == blob.data[1:2]
            assert up.requests == 1 and eng.counters.source_fallbacks == 1

    asyncio.run(go())


def test_a_whole_blob_read_never_ends_with_bytes_that_fail_the_digest(tmp_path: Path) -> None:
    good = make_blob(5 * MiB)
    lying = Blob(os.urandom(good.size), good.task, good.digests)  # the upstream lies
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"

    async def go() -> None:
        async with origin(lying) as up, peer(tmp_path, "p", nowhere, heartbeat=False) as eng:
            got = bytearray()
            with pytest.raises(Exception) as caught:
                async for chunk in eng.open(api.BlobRequest(good.task, good.size, up.url)):
                    got += chunk
            assert "sha256" in str(caught.value)
            assert len(got) < good.size  # the last piece was held back, then refused
            assert not eng.store.has_blob(good.task)

    asyncio.run(go())
