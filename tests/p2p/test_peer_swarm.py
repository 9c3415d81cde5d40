"""A child fetching pieces from real piece servers on loopback (lamina.p2p.peer.swarm)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from peer_harness import Blob, Piecer, fill, make_blob, piecers, schedule

from lamina.http import new_session
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket
from lamina.p2p.peer.storage import PieceStore, TaskFile
from lamina.p2p.peer.swarm import SwarmDownload

MiB = 1 << 20


def blob_bytes(tf: TaskFile) -> bytes:
    with tf.open_reader() as f:
        return f.read()


async def fetch(
    store: PieceStore,
    blob: Blob,
    parents: list[Piecer],
    *,
    timeout: float = 30,
    limiter: TokenBucket | None = None,
    wait_stalled: float | None = None,
) -> tuple[SwarmDownload, TaskFile]:
    tf = store.open_task(blob.task, blob.size)
    async with new_session() as session:
        swarm = SwarmDownload(store, tf, session, Counters(), limiter=limiter)
        swarm.update(schedule(blob, parents))
        runner = asyncio.ensure_future(swarm.run())
        try:
            if wait_stalled is None:
                await asyncio.wait_for(asyncio.shield(runner), timeout)
            else:
                await asyncio.sleep(wait_stalled)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    return swarm, tf


def test_a_child_fetches_every_piece_from_two_parents_and_the_blob_is_intact(
    tmp_path: Path,
) -> None:
    blob = make_blob(22 * MiB)  # 6 pieces of 4 MiB

    async def go() -> None:
        async with piecers(tmp_path, "a", "b") as (a, b):
            fill(a.store, blob)
            fill(b.store, blob)
            store = PieceStore(tmp_path / "child", durable=False)
            swarm, tf = await fetch(store, blob, [a, b])
            assert not tf.missing() and not swarm.failures
            assert sorted(swarm.done) == list(range(6))
            store.verify(tf)
            store.completed(tf)
            assert store.blob_path(blob.task).read_bytes() == blob.data
            # both parents served (spread by in-flight count); endgame asks the last <= 3
            # pieces twice, and only the winners count as received
            assert a.counters.bytes_uploaded > 0 and b.counters.bytes_uploaded > 0
            uploaded = a.counters.bytes_uploaded + b.counters.bytes_uploaded
            assert blob.size <= uploaded <= blob.size + 3 * 4 * MiB
            assert swarm.counters.bytes_from_peers == blob.size
            store.close()

    asyncio.run(go())


def corrupt(store: PieceStore, blob: Blob, piece: int) -> None:
    """Flip bytes of one piece of a finished blob on disk: this parent now lies."""
    path = store.blob_path(blob.task)
    with open(path, "r+b") as f:
        f.seek(piece * (4 * MiB) + 100)
        f.write(b"\x00\xff" * 8)


def test_a_parent_serving_corrupt_bytes_is_reported_and_nothing_corrupt_is_kept(
    tmp_path: Path,
) -> None:
    blob = make_blob(13 * MiB)  # 4 pieces

    async def go() -> None:
        async with piecers(tmp_path, "liar", "honest") as (liar, honest):
            fill(liar.store, blob)
            for n in range(4):
                corrupt(liar.store, blob, n)
            # alone, the liar gets nothing written: every piece it sends is refused
            store = PieceStore(tmp_path / "alone", durable=False)
            swarm, tf = await fetch(store, blob, [liar], wait_stalled=1.5)
            assert tf.held() == 0
            assert {(f.parent_id, f.reason) for f in swarm.failures} == {("liar/task", "corrupt")}
            assert swarm.counters.pieces_corrupt >= 1 and swarm.stalled
            store.close()
            # with an honest parent too, the child finishes and the blob is intact
            fill(honest.store, blob)
            store = PieceStore(tmp_path / "child", durable=False)
            swarm, tf = await fetch(store, blob, [liar, honest])
            assert not tf.missing()
            assert all(f.parent_id == "liar/task" for f in swarm.failures)
            store.verify(tf)  # raises DigestMismatch if any corrupt byte was written
            store.completed(tf)
            assert store.blob_path(blob.task).read_bytes() == blob.data
            store.close()

    asyncio.run(go())


def test_a_parent_killed_mid_transfer_the_child_finishes_from_the_other(tmp_path: Path) -> None:
    blob = make_blob(30 * MiB)  # 8 pieces

    async def go() -> None:
        # the doomed parent is slow (4 MiB/s) so it is killed with pieces in flight
        async with (
            piecers(tmp_path, "doomed", limit=4 * MiB) as (doomed,),
            piecers(tmp_path, "steady", limit=16 * MiB) as (steady,),
        ):
            fill(doomed.store, blob)
            fill(steady.store, blob)
            store = PieceStore(tmp_path / "child", durable=False)
            fetching = asyncio.ensure_future(fetch(store, blob, [doomed, steady]))
            await asyncio.sleep(0.7)
            assert doomed.counters.bytes_uploaded < blob.size
            await doomed.stop()  # its server closes, connections and all
            swarm, tf = await asyncio.wait_for(fetching, 30)
            assert not tf.missing()
            store.verify(tf)
            store.completed(tf)
            assert store.blob_path(blob.task).read_bytes() == blob.data
            assert any(f.parent_id == "doomed/task" for f in swarm.failures)
            store.close()

    asyncio.run(go())


def test_a_parent_serves_pieces_while_it_is_still_downloading(tmp_path: Path) -> None:
    blob = make_blob(17 * MiB)  # 5 pieces

    async def go() -> None:
        async with piecers(tmp_path, "halfway") as (halfway,):
            parent_tf = fill(halfway.store, blob, [0, 3])  # still downloading
            store = PieceStore(tmp_path / "child", durable=False)
            fetching = asyncio.ensure_future(fetch(store, blob, [halfway]))
            await asyncio.sleep(0.8)
            child_tf = store.lookup(blob.task)
            assert child_tf is not None and child_tf.held() == 2
            t0 = time.monotonic()
            for n in (1, 2, 4):  # the parent gets the rest; the long poll tells the child
                s, e = parent_tf.span(n)
                halfway.store.write_piece(parent_tf, n, blob.data[s:e])
                parent_tf.mark(n)
            swarm, tf = await asyncio.wait_for(fetching, 10)
            assert time.monotonic() - t0 < 2.0  # HAVE by long poll, not by a 2 s timeout
            assert not tf.missing() and not swarm.failures
            assert blob_bytes(tf) == blob.data
            store.close()

    asyncio.run(go())


def test_a_restart_with_a_half_written_piece_fetches_that_piece_again(tmp_path: Path) -> None:
    blob = make_blob(13 * MiB)  # 4 pieces

    async def go() -> None:
        store = PieceStore(tmp_path / "child")
        tf = store.open_task(blob.task, blob.size)
        s, e = tf.span(0)
        store.write_piece(tf, 0, blob.data[s:e])
        tf.mark(0)
        s, e = tf.span(1)
        tf.write_at(s, blob.data[s : s + (e - s) // 2])  # killed half way through piece 1
        tf.write_at(s + (e - s) // 2, b"\x00" * 1000)
        store.close()  # (a kill: nothing more is written)

        store = PieceStore(tmp_path / "child")
        async with piecers(tmp_path, "p") as (p,):
            fill(p.store, blob)
            swarm, tf = await fetch(store, blob, [p])
        assert sorted(swarm.done) == [1, 2, 3]  # piece 0 was trusted, piece 1 was not
        store.verify(tf)
        store.completed(tf)
        assert store.blob_path(blob.task).read_bytes() == blob.data
        store.close()

    asyncio.run(go())


def test_the_download_limit_roughly_holds(tmp_path: Path) -> None:
    blob = make_blob(4 * MiB)

    async def go() -> None:
        async with piecers(tmp_path, "p") as (p,):
            fill(p.store, blob)
            store = PieceStore(tmp_path / "child", durable=False)
            t0 = time.monotonic()
            _, tf = await fetch(store, blob, [p], limiter=TokenBucket(8 * MiB))
            elapsed = time.monotonic() - t0
            assert not tf.missing()
            assert elapsed >= 0.4, elapsed
            store.close()

    asyncio.run(go())
