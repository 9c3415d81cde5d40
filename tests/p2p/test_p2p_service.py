"""The scheduler service over real HTTP on loopback, with HttpSchedulerClients."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lamina.errors import InvalidArgument, NotFound
from lamina.p2p import tokens
from lamina.p2p.api import HostInfo, PieceFailure, Report
from lamina.p2p.client import HttpSchedulerClient
from lamina.p2p.pieces import piece_count
from lamina.p2p.service.serve import start_scheduler

KEY = b"s" * 32
TASK = "sha256:" + "cd" * 32
SIZE = 20 << 20  # 5 pieces
PIECES = piece_count(SIZE)
SRC = "http://127.0.0.1:1/v2/x/blobs/" + TASK
DIGESTS = tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(PIECES))


def run(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A sync test that runs the coroutine on a fresh loop (the suite has no asyncio
    plugin)."""

    @functools.wraps(fn)
    def test() -> None:
        asyncio.run(fn())

    return test


def h(n: int, seed: bool = False, port: int = 4001) -> HostInfo:
    return HostInfo(f"host{n}", f"http://127.0.0.1:{port}", seed=seed)


@run
async def test_no_join_token_is_refused_and_nothing_registers() -> None:
    sched = await start_scheduler(KEY)
    try:
        async with aiohttp.ClientSession() as s:
            body = {"host_id": "x", "addr": "http://127.0.0.1:1"}
            async with s.post(f"{sched.url}/v1/hosts", json=body) as r:
                assert r.status == 401
                assert (await r.json())["error"] == "UNAUTHORIZED"
            bad = {"Authorization": "Bearer " + tokens.join_token(b"o" * 32)}
            async with s.post(f"{sched.url}/v1/hosts", json=body, headers=bad) as r:
                assert r.status == 401
            async with s.get(f"{sched.url}/metrics") as r:
                assert r.status == 200
                assert "lamina_p2p_hosts 0" in await r.text()
        async with HttpSchedulerClient(sched.url, b"o" * 32) as wrong:
            with pytest.raises(InvalidArgument, match="401"):
                await wrong.register(TASK, "p", h(1), SIZE, SRC)
        async with HttpSchedulerClient(sched.url, KEY) as c:
            assert (await c.status())["tasks"] == []
    finally:
        await sched.close()


@run
async def test_bad_input_is_a_400_not_a_crash() -> None:
    sched = await start_scheduler(KEY)
    auth = {"Authorization": "Bearer " + tokens.join_token(KEY)}
    try:
        async with aiohttp.ClientSession(headers=auth) as s:
            for path, body in [
                ("/v1/hosts", b"{not json"),
                ("/v1/hosts", b'{"host_id": 3}'),
                (f"/v1/tasks/{TASK}/report", b'{"peer_id": "p", "done": ["x"]}'),
                ("/v1/tasks/sha256:zz/report", b'{"peer_id": "p"}'),
                (f"/v1/tasks/{TASK}/finish", b'{"peer_id": "p", "outcome": "maybe"}'),
            ]:
                async with s.post(sched.url + path, data=body) as r:
                    assert r.status == 400, (path, await r.text())
                    assert (await r.json())["error"] == "BAD_REQUEST"
    finally:
        await sched.close()


@run
async def test_full_flow_with_two_clients() -> None:
    sched = await start_scheduler(KEY)
    try:
        async with (
            HttpSchedulerClient(sched.url, KEY) as a,
            HttpSchedulerClient(sched.url, KEY) as b,
        ):
            pa, pb = f"host1/{TASK}", f"host2/{TASK}"
            s1 = await a.register(TASK, pa, h(1), SIZE, SRC)
            assert s1.action == "back_to_source"
            assert tokens.check(KEY, TASK, s1.token, 0)
            s2 = await b.register(TASK, pb, h(2, port=4002), SIZE, SRC)
            assert s2.action == "parents"
            assert s2.parents[0].peer_id == pa
            await a.report(
                TASK, Report(pa, done=(0, 1), source_digests=DIGESTS[:2], bytes_from_source=8 << 20)
            )
            s3 = await b.report(TASK, Report(pb))
            assert s3.digests == DIGESTS[:2]
            with pytest.raises(InvalidArgument, match="not back to source"):
                await b.report(TASK, Report(pb, source_digests=DIGESTS[:1]))
            await a.report(
                TASK,
                Report(
                    pa,
                    digests_known=2,
                    done=(2, 3, 4),
                    source_digests_from=2,
                    source_digests=DIGESTS[2:],
                ),
            )
            await a.finish(TASK, pa, "succeeded")
            s4 = await b.report(
                TASK,
                Report(
                    pb,
                    done=(0,),
                    digests_known=2,
                    failed=(PieceFailure(1, pa, "timeout"),),
                    bytes_from_peers=4 << 20,
                ),
            )
            assert s4.digests_from == 2 and s4.digests == DIGESTS[2:]
            await b.finish(TASK, pb, "succeeded")
            st = await b.status()
            (t,) = st["tasks"]
            assert t["state"] == "succeeded"
            assert {p["state"] for p in t["peers"]} == {"succeeded"}
            assert t["bytes_from_source"] == 8 << 20
            await a.leave(TASK, pa)
            await b.leave(TASK, pb)
            await b.leave(TASK, pb)
            with pytest.raises(NotFound, match="404"):
                await b.report(TASK, Report(pb))
        async with aiohttp.ClientSession() as s, s.get(f"{sched.url}/metrics") as r:
            text = await r.text()
        assert "lamina_p2p_bytes_from_source_total 8388608" in text
        assert "lamina_p2p_bytes_from_peers_total 4194304" in text
        assert 'lamina_p2p_scheduler_decisions_total{action="parents"}' in text
    finally:
        await sched.close()


@run
async def test_seed_is_triggered_over_http() -> None:
    seen: list[tuple[str, object, str]] = []

    async def seed_route(request: web.Request) -> web.Response:
        seen.append(
            (
                request.match_info["task"],
                await request.json(),
                request.headers.get("Authorization", ""),
            )
        )
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/p2p/v1/tasks/{task}/seed", seed_route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sched = await start_scheduler(KEY)
    try:
        async with HttpSchedulerClient(sched.url, KEY) as c:
            await c.announce_host(h(9, seed=True, port=port))
            s1 = await c.register(TASK, f"host1/{TASK}", h(1), SIZE, SRC)
            assert s1.action == "wait"
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert seen == [
                (TASK, {"size": SIZE, "source": SRC}, "Bearer " + tokens.join_token(KEY))
            ]
            s2 = await c.register(TASK, f"host9/{TASK}", h(9, seed=True, port=port), SIZE, SRC)
            assert s2.action == "back_to_source"
    finally:
        await sched.close()
        await runner.cleanup()


@run
async def test_client_announces_again_after_a_scheduler_forgot_the_host() -> None:
    sched = await start_scheduler(KEY)
    try:
        async with HttpSchedulerClient(sched.url, KEY) as c:
            await c.register(TASK, f"host1/{TASK}", h(1), SIZE, SRC)
            port = sched.port
            await sched.close()
            sched = await start_scheduler(KEY, port=port)  # a restart without a store
            with pytest.raises(NotFound):
                await c.report(TASK, Report(f"host1/{TASK}"))
            s = await c.register(TASK, f"host1/{TASK}", h(1), SIZE, SRC)
            assert s.action == "back_to_source"
    finally:
        await sched.close()


@run
async def test_connection_refused_is_a_clear_error() -> None:
    sched = await start_scheduler(KEY)
    url = sched.url
    await sched.close()
    async with HttpSchedulerClient(url, KEY, attempts=2) as c:
        with pytest.raises(Exception, match="failed after retries") as info:
            await c.status()
        assert type(info.value).__name__ == "ToolError"
