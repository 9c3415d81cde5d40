"""The Redis store: two schedulers over one real redis-server serve one swarm, and a
scheduler process restarted mid-task loses nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

from lamina.p2p.api import HostInfo, PieceFailure, Report
from lamina.p2p.client import HttpSchedulerClient
from lamina.p2p.pieces import piece_count
from lamina.p2p.service.serve import start_scheduler

KEY = b"r" * 32
TASK = "sha256:" + "ef" * 32
SIZE = 20 << 20
PIECES = piece_count(SIZE)
SRC = "http://127.0.0.1:1/v2/x/blobs/" + TASK
DIGESTS = tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(PIECES))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def h(n: int) -> HostInfo:
    return HostInfo(f"host{n}", f"http://127.0.0.1:{4000 + n}")


def test_two_schedulers_over_one_redis_serve_one_task(redis_url: str) -> None:
    async def main() -> None:
        s1 = await start_scheduler(KEY, redis_url=redis_url)
        s2 = await start_scheduler(KEY, redis_url=redis_url)
        try:
            async with (
                HttpSchedulerClient(s1.url, KEY) as a,
                HttpSchedulerClient(s2.url, KEY) as b,
            ):
                pa, pb = f"host1/{TASK}", f"host2/{TASK}"
                assert (await a.register(TASK, pa, h(1), SIZE, SRC)).action == "back_to_source"
                # concurrent registrations through both: still one back-to-source peer
                others = await asyncio.gather(
                    *(
                        (a if n % 2 else b).register(TASK, f"host{n}/{TASK}", h(n), SIZE, SRC)
                        for n in range(2, 10)
                    )
                )
                assert [s.action for s in others] == ["parents"] * 8
                assert all(s.parents[0].peer_id == pa for s in others)
                await a.report(TASK, Report(pa, done=(0, 1), source_digests=DIGESTS[:2]))
                sb = await b.report(TASK, Report(pb))
                assert sb.digests == DIGESTS[:2]
                await b.report(TASK, Report(pb, done=(0,), digests_known=2))
                # a corrupt piece reported through s2 is blocklisted for s1's peers too
                await b.report(
                    TASK, Report(f"host3/{TASK}", failed=(PieceFailure(0, pb, "corrupt"),))
                )
                s4 = await a.report(TASK, Report(f"host4/{TASK}"))
                assert pb not in {p.peer_id for p in s4.parents}
                st1, st2 = await a.status(), await b.status()
                assert st1["tasks"] == st2["tasks"]
                (t,) = st1["tasks"]
                states = sorted(p["state"] for p in t["peers"])
                assert states.count("back_to_source") == 1
                assert {x["host_id"]: x["upload_failed"] for x in st1["hosts"]}["host2"] == 1
        finally:
            await s1.close()
            await s2.close()

    asyncio.run(main())


def _spawn(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from lamina.p2p.service.serve import run_scheduler; "
        f"run_scheduler('127.0.0.1:{port}', b'r' * 32, redis_url={redis_url!r})"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)


async def _until_up(url: str) -> None:
    deadline = time.monotonic() + 20
    async with HttpSchedulerClient(url, KEY, attempts=1) as c:
        while True:
            try:
                await c.status()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


def test_restarted_scheduler_process_loses_nothing(redis_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn(port, redis_url)

    async def before() -> None:
        await _until_up(url)
        async with HttpSchedulerClient(url, KEY) as c:
            pa, pb = f"host1/{TASK}", f"host2/{TASK}"
            assert (await c.register(TASK, pa, h(1), SIZE, SRC)).action == "back_to_source"
            await c.report(TASK, Report(pa, done=(0, 1, 2), source_digests=DIGESTS[:3]))
            await c.register(TASK, pb, h(2), SIZE, SRC)

    async def after() -> None:
        await _until_up(url)
        # a fresh client: nothing remembered on this side either
        async with HttpSchedulerClient(url, KEY) as c:
            pa, pb = f"host1/{TASK}", f"host2/{TASK}"
            s = await c.report(TASK, Report(pb))
            assert s.action == "parents" and s.parents[0].peer_id == pa
            assert s.digests == DIGESTS[:3]
            # the back-to-source peer is still the one: a newcomer does not get its slot
            s3 = await c.register(TASK, f"host3/{TASK}", h(3), SIZE, SRC)
            assert s3.action == "parents"

    try:
        asyncio.run(before())
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        err = proc.stderr.read() if proc.stderr else b""
        if proc.stderr:
            proc.stderr.close()
        assert code == 0, err  # SIGTERM is a clean shutdown
        proc = _spawn(port, redis_url)
        asyncio.run(after())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()
