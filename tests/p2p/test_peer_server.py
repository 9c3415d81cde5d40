"""The piece server on loopback: swarm tokens, upload slots, the upload limit, the long
poll, the seed trigger (lamina.p2p.peer.server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from peer_harness import KEY, fill, make_blob, piecers, token

from lamina.p2p import tokens
from lamina.p2p.peer.server import add_piece_routes
from lamina.p2p.peer.storage import PieceStore

MiB = 1 << 20


def test_pieces_need_a_valid_token_for_this_task(tmp_path: Path) -> None:
    blob, other = make_blob(5 * MiB), make_blob(1000)

    async def go() -> None:
        async with piecers(tmp_path, "p") as (p,), aiohttp.ClientSession() as s:
            fill(p.store, blob)
            piece = f"{p.addr}/p2p/v1/tasks/{blob.task}/pieces/0"
            bits = f"{p.addr}/p2p/v1/tasks/{blob.task}/bitfield"
            for url in (piece, bits):
                async with s.get(url) as r:
                    assert r.status == 401
                async with s.get(url, headers={"Authorization": "Bearer x"}) as r:
                    assert r.status == 401
                for bad in (
                    "v1.99999999999.00",
                    token(other.task),  # another task's token
                    tokens.mint(KEY, blob.task, time.time() - 1000),  # expired
                    tokens.mint(b"q" * 32, blob.task, time.time()),  # another swarm's
                ):
                    async with s.get(url, headers={"Authorization": f"Swarm {bad}"}) as r:
                        assert r.status == 403, bad
            good = {"Authorization": f"Swarm {token(blob.task)}"}
            async with s.get(piece, headers=good) as r:
                assert r.status == 200 and await r.read() == blob.data[: 4 * MiB]
            async with s.get(f"{p.addr}/p2p/v1/tasks/{blob.task}/pieces/1", headers=good) as r:
                assert r.status == 200 and await r.read() == blob.data[4 * MiB :]
            async with s.get(f"{p.addr}/p2p/v1/tasks/{blob.task}/pieces/2", headers=good) as r:
                assert r.status == 404
            assert p.counters.bytes_uploaded == blob.size

    asyncio.run(go())


def test_upload_slots_turn_a_child_away_with_503_when_full(tmp_path: Path) -> None:
    blob = make_blob(8 * MiB)

    async def go() -> None:
        async with piecers(tmp_path, "p", slots=1, limit=8 * MiB) as (p,):
            fill(p.store, blob)
            async with aiohttp.ClientSession() as s:
                good = {"Authorization": f"Swarm {token(blob.task)}"}

                async def get(n: int) -> int:
                    url = f"{p.addr}/p2p/v1/tasks/{blob.task}/pieces/{n}"
                    async with s.get(url, headers=good) as r:
                        await r.read()
                        return r.status

                statuses = sorted(await asyncio.gather(get(0), get(1)))
                assert statuses == [200, 503]
                assert p.gate.active == 0  # the slot came back
                assert await get(1) == 200

    asyncio.run(go())


def test_the_upload_limit_roughly_holds(tmp_path: Path) -> None:
    blob = make_blob(4 * MiB)

    async def go() -> None:
        async with piecers(tmp_path, "p", limit=8 * MiB) as (p,), aiohttp.ClientSession() as s:
            fill(p.store, blob)
            t0 = time.monotonic()
            url = f"{p.addr}/p2p/v1/tasks/{blob.task}/pieces/0"
            async with s.get(url, headers={"Authorization": f"Swarm {token(blob.task)}"}) as r:
                assert await r.read() == blob.data
            assert time.monotonic() - t0 >= 0.4  # 4 MiB at 8 MiB/s

    asyncio.run(go())


def test_the_bitfield_long_poll_answers_on_a_new_piece_or_after_2_s(tmp_path: Path) -> None:
    blob = make_blob(9 * MiB)  # 3 pieces

    async def go() -> None:
        async with piecers(tmp_path, "p") as (p,), aiohttp.ClientSession() as s:
            tf = fill(p.store, blob, [1])
            url = f"{p.addr}/p2p/v1/tasks/{blob.task}/bitfield"
            auth = {"Authorization": f"Swarm {token(blob.task)}"}
            async with s.get(url, headers=auth) as r:
                first = await r.json()
            assert first["pieces"] == "QA==" and not first["complete"]  # 0b010_00000
            t0 = time.monotonic()
            async with s.get(url, params={"version": str(first["version"])}, headers=auth) as r:
                same = await r.json()
            assert 1.8 <= time.monotonic() - t0 < 3 and same["version"] == first["version"]

            async def later() -> None:
                await asyncio.sleep(0.3)
                s0, e0 = tf.span(0)
                p.store.write_piece(tf, 0, blob.data[s0:e0])
                tf.mark(0)

            t0 = time.monotonic()
            marking = asyncio.ensure_future(later())
            async with s.get(url, params={"version": str(first["version"])}, headers=auth) as r:
                newer = await r.json()
            await marking
            assert time.monotonic() - t0 < 1.5
            assert newer["version"] > first["version"] and newer["pieces"] == "wA=="

    asyncio.run(go())


def test_the_seed_trigger_needs_the_join_token(tmp_path: Path) -> None:
    asked: list[tuple[str, int, str]] = []
    blob = make_blob(100)

    async def go() -> None:
        app = web.Application()
        store = PieceStore(tmp_path / "seed")
        add_piece_routes(
            app, store, KEY, on_seed=lambda task, size, src: asked.append((task, size, src))
        )
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/p2p/v1/tasks/{blob.task}/seed"
        body = {"size": 100, "source": "http://origin/v2/x/blobs/" + blob.task}
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(url, json=body) as r:
                    assert r.status == 401
                async with s.post(url, json=body, headers={"Authorization": "Bearer nope"}) as r:
                    assert r.status == 403
                join = {"Authorization": f"Bearer {tokens.join_token(KEY)}"}
                async with s.post(url, json=body, headers=join) as r:
                    assert r.status == 202
        finally:
            await runner.cleanup()
            store.close()
        assert asked == [(blob.task, 100, body["source"])]

    asyncio.run(go())
