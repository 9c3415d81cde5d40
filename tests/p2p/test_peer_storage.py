"""Pieces on disk, the cache bound, rates (lamina.p2p.peer.storage, .rates)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from peer_harness import fill, make_blob

from lamina.errors import DigestMismatch, InvalidArgument
from lamina.p2p.peer.rates import TokenBucket, parse_rate, parse_size
from lamina.p2p.peer.storage import PieceStore

MiB = 1 << 20


def test_a_task_file_is_preallocated_and_pieces_land_at_their_offsets(tmp_path: Path) -> None:
    blob = make_blob(9 * MiB)
    store = PieceStore(tmp_path, durable=True)
    tf = fill(store, blob, [2, 0])
    assert os.stat(tf.path).st_size == blob.size
    assert tf.has(0) and not tf.has(1) and tf.has(2) and tf.missing() == [1]
    with tf.open_reader() as f:
        assert os.pread(f.fileno(), 4 * MiB, 0) == blob.data[: 4 * MiB]
        assert os.pread(f.fileno(), MiB, 8 * MiB) == blob.data[8 * MiB :]
    assert not store.has_blob(blob.task)  # not cached until complete and verified
    store.close()


def test_a_blob_whose_digest_does_not_match_is_dropped(tmp_path: Path) -> None:
    blob = make_blob(5 * MiB)
    store = PieceStore(tmp_path)
    tf = store.open_task(blob.task, blob.size)
    store.write_piece(tf, 0, blob.data[: 4 * MiB])
    store.write_piece(tf, 1, b"\0" * MiB)  # pieces that do not add up to the digest
    with pytest.raises(DigestMismatch):
        store.verify(tf)
    store.drop(tf, DigestMismatch("x"))
    assert not store.has_blob(blob.task) and store.lookup(blob.task) is None
    assert not list((tmp_path / "blobs" / "sha256").iterdir())
    assert not list((tmp_path / "partial").iterdir())
    store.close()


def test_a_finished_blob_is_kept_by_digest_and_found_after_a_restart(tmp_path: Path) -> None:
    blob = make_blob(3 * MiB)
    store = PieceStore(tmp_path)
    fill(store, blob)
    store.close()
    again = PieceStore(tmp_path)
    assert (tmp_path / "blobs" / "sha256" / blob.task.removeprefix("sha256:")).exists()
    tf = again.lookup(blob.task)
    assert tf is not None and tf.complete and not tf.missing()
    with tf.open_reader() as f:
        assert f.read() == blob.data


def test_lru_eviction_keeps_the_bound_and_never_removes_a_task_in_use(tmp_path: Path) -> None:
    blobs = [make_blob(2 * MiB) for _ in range(5)]
    evicted: list[str] = []
    store = PieceStore(tmp_path, cache_size=5 * MiB)
    store.on_evict = evicted.append
    fill(store, blobs[0])
    time.sleep(0.01)
    fill(store, blobs[1])
    assert store.used_bytes() == 4 * MiB and not evicted
    with store.using(blobs[0].task):  # read now: it is the most recently used, and in use
        fill(store, blobs[2])  # 6 MiB > 5 MiB: blobs[1] goes, not blobs[0]
        assert evicted == [blobs[1].task]
        # a download in progress is never evicted either, even over the bound
        partial = store.open_task(blobs[3].task, blobs[3].size)
        assert evicted == [blobs[1].task, blobs[2].task]
        assert store.has_blob(blobs[0].task)
        fill(store, blobs[4], [0])
        assert store.used_bytes() > 5 * MiB  # every remaining byte is in use: the bound yields
        assert store.has_blob(blobs[0].task)
    assert store.lookup(blobs[3].task) is partial
    fill(store, blobs[3], [])  # (already open)
    store.make_room(0)
    assert evicted[-1] == blobs[0].task and store.used_bytes() <= 5 * MiB
    store.close()


def test_rates_and_sizes_parse_as_written() -> None:
    assert parse_rate("50Mbit") == 50e6 / 8
    assert parse_rate("1.5Gbit/s") == 1.5e9 / 8
    assert parse_rate("10MiB") == 10 * MiB
    assert parse_rate("800KB/s") == 800e3
    assert parse_size("20GiB") == 20 << 30
    assert parse_size("2G") == 2 << 30
    assert parse_size("1048576") == MiB
    for bad in ("fast", "50 Mbitz", "-3MB", ""):
        with pytest.raises(InvalidArgument) as caught:
            parse_rate(bad)
        assert caught.value.hint and "50Mbit" in caught.value.hint
    with pytest.raises(InvalidArgument):
        parse_size("10Mbit")  # a size is not a rate


def test_the_token_bucket_holds_its_rate_for_concurrent_takers() -> None:
    async def go() -> float:
        bucket = TokenBucket(8 * MiB)
        t0 = time.monotonic()
        await asyncio.gather(*(bucket.take(MiB) for _ in range(4)))
        return time.monotonic() - t0

    assert 0.45 <= asyncio.run(go()) < 1.0  # 4 MiB at 8 MiB/s, from an empty bucket
