"""``PeerEngine``: a :class:`lamina.p2p.api.BlobSource` over the swarm.

A finished blob is served straight from the cache, without the scheduler. Otherwise
one download a task (shared by every client reading it, and by children fetching its
pieces): register with the scheduler, then report and poll at ``retry_ms`` and obey
the schedule (``parents``: :mod:`~lamina.p2p.peer.swarm`; ``back_to_source``:
:mod:`~lamina.p2p.peer.source`, piece digests reported in batches; ``wait``; ``done``);
once every piece is held and the blob's digest checked, ``finish``. The peer stays in
the swarm as a parent until its blob is evicted or the engine closes (``leave``).

Readers get bytes in order as pieces arrive, read back from the piece file (never
from buffers: memory stays bounded whatever the arrival order). The last byte of a
whole-blob read is held back until the blob's digest is checked, so a client never
receives a complete blob that does not match its digest.

When the scheduler cannot be reached the blob comes from the origin, with one log line
that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina.errors import InvalidArgument, LaminaError, NotFound, ToolError
from lamina.http import network_errors
from lamina.p2p import api, pieces, tokens
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket
from lamina.p2p.peer.source import fetch_from_source
from lamina.p2p.peer.storage import PieceStore, TaskFile
from lamina.p2p.peer.swarm import SwarmDownload

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

_READ = 1 << 20


def _failures() -> tuple[type[BaseException], ...]:
    """What a network call can raise that is not a bug: lamina's errors, the OS's, aiohttp's."""
    return (LaminaError, OSError, ValueError, KeyError, *network_errors())


class _Unreachable(Exception):
    pass


@dataclass
class _Download:
    tf: TaskFile
    source: str
    headers: Mapping[str, str]
    peer_id: str
    runner: asyncio.Task[None] | None = None
    registered: bool = False
    outcome: api.FinishOutcome = "failed"
    """What ``finish`` says if the download fails."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class PeerEngine:
    """The peer's downloads. ``start`` before use, ``close`` after."""

    def __init__(
        self,
        store: PieceStore,
        scheduler: api.SchedulerClient,
        host: api.HostInfo,
        swarm_key: bytes,
        *,
        download_limit: TokenBucket | None = None,
        source_limit: TokenBucket | None = None,
        concurrency: int = 8,
        piece_timeout: float = 30.0,
        heartbeat: bool = True,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.host = host
        self.swarm_key = tokens.check_key(swarm_key)
        self.download_limit = download_limit
        self.source_limit = source_limit or download_limit
        self.concurrency = concurrency
        self.piece_timeout = piece_timeout
        self.counters = Counters()
        self._heartbeat = heartbeat
        self._downloads: dict[str, _Download] = {}
        self._joined: dict[str, str] = {}
        """Tasks this engine registered (task -> peer_id): left on eviction and close."""
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        store.on_evict = self._evicted

    async def start(self) -> None:
        from lamina.http import new_session

        self._session = new_session(connections=256, read_timeout=30)
        if self._heartbeat:
            self._spawn(self._announce_forever())

    async def __aenter__(self) -> PeerEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for dl in list(self._downloads.values()):
            if dl.runner is not None:
                dl.runner.cancel()
        runners = [dl.runner for dl in self._downloads.values() if dl.runner is not None]
        await asyncio.gather(*runners, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for name, peer_id in list(self._joined.items()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler.leave(name, peer_id), 2)
        self._joined.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.store.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce_forever(self) -> None:
        warned = False
        while True:
            try:
                await self.scheduler.announce_host(self.host)
                warned = False
            except _failures() as exc:  # retried
                if not warned:
                    log.warning("cannot announce this host to the scheduler: %s", exc)
                    warned = True
            await asyncio.sleep(api.HOST_HEARTBEAT)

    def _evicted(self, task: str) -> None:
        peer_id = self._joined.pop(task, None)
        if peer_id is not None:
            self._spawn(self.scheduler.leave(task, peer_id))

    # ---- the BlobSource ----

    def seed(self, task: str, size: int, source: str) -> None:
        """The scheduler asked this seed host to fetch ``task`` from ``source``."""
        if not self.store.has_blob(task):
            self._download(task, size, source, {})

    async def open(self, request: api.BlobRequest) -> AsyncIterator[bytes]:
        tf = self.store.lookup(request.task)
        if tf is None or not tf.complete:
            tf = self._download(
                request.task, request.size, request.source, request.source_headers
            ).tf
        if tf.size != request.size:
            raise InvalidArgument(f"{request.task} has {tf.size} bytes, not {request.size}")
        end = tf.size if request.end is None else request.end
        numbers = pieces.pieces_of_range(tf.size, request.start, end, tf.piece_length)
        with self.store.using(tf.task):
            if tf.error is not None:
                raise tf.error
            with tf.open_reader() as reader:
                for n in numbers:
                    await tf.wait_piece(n)
                    if n == tf.count - 1 and end == tf.size:
                        await self._wait_verified(tf)
                    start, stop = tf.span(n)
                    offset, stop = max(start, request.start), min(stop, end)
                    while offset < stop:
                        chunk = await asyncio.to_thread(
                            os.pread, reader.fileno(), min(_READ, stop - offset), offset
                        )
                        if not chunk:
                            raise ToolError(f"{tf.task} ended early at byte {offset}")
                        offset += len(chunk)
                        yield chunk
            if not numbers and end == tf.size:
                await self._wait_verified(tf)

    async def _wait_verified(self, tf: TaskFile) -> None:
        while not tf.complete:
            if tf.error is not None:
                raise tf.error
            await tf.wait_newer(tf.version, 2.0)

    # ---- one download ----

    def _download(self, task: str, size: int, source: str, headers: Mapping[str, str]) -> _Download:
        dl = self._downloads.get(task)
        if dl is not None:
            return dl
        tf = self.store.open_task(task, size)
        dl = _Download(tf, source, dict(headers), f"{self.host.host_id}/{task}")
        self._downloads[task] = dl
        dl.runner = asyncio.get_running_loop().create_task(self._run(dl))
        return dl

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ToolError("the peer engine is not started", hint="call PeerEngine.start()")
        return self._session

    async def _run(self, dl: _Download) -> None:
        tf = dl.tf
        try:
            try:
                schedule = await self._register(dl)
                await self._follow(dl, schedule)
            except _Unreachable as exc:
                log.warning("scheduler unreachable: fetching %s from the origin (%s)", tf.task, exc)
                self.counters.source_fallbacks += 1
                dl.registered = False
                known = await fetch_from_source(
                    self.session,
                    self.store,
                    tf,
                    dl.source,
                    dl.headers,
                    counters=self.counters,
                    limiter=self.source_limit,
                )
                await asyncio.to_thread(self.store.verify, tf, known)
                self.store.completed(tf)
                return
        except asyncio.CancelledError:
            self.store.drop(tf, ToolError(f"the download of {tf.task} was stopped"))
            raise
        except LaminaError as exc:
            log.warning("%s failed: %s", tf.task, exc)
            self.store.drop(tf, exc)
            if dl.registered:
                with contextlib.suppress(Exception):
                    await self.scheduler.finish(tf.task, dl.peer_id, dl.outcome, str(exc)[:500])
        finally:
            self._downloads.pop(tf.task, None)

    async def _register(self, dl: _Download) -> api.Schedule:
        tf = dl.tf
        schedule = await self._call(
            self.scheduler.register(tf.task, dl.peer_id, self.host, tf.size, dl.source)
        )
        dl.registered = True
        self._joined[tf.task] = dl.peer_id
        return schedule

    async def _call(self, coro: object) -> api.Schedule:
        try:
            return await coro  # type: ignore[no-any-return,misc]
        except NotFound:
            raise  # the scheduler forgot this peer (it restarted): register again
        except _failures() as exc:
            raise _Unreachable(str(exc) or type(exc).__name__) from exc

    async def _follow(self, dl: _Download, schedule: api.Schedule) -> api.FinishOutcome:
        """Obey schedules until the blob is held and verified; the finish outcome."""
        tf = dl.tf
        swarm = SwarmDownload(
            self.store,
            tf,
            self.session,
            self.counters,
            limiter=self.download_limit,
            concurrency=self.concurrency,
            piece_timeout=self.piece_timeout,
            on_event=dl.wake.set,
        )
        runner: asyncio.Task[None] | None = None
        try:
            while tf.missing():
                if schedule.action == "back_to_source":
                    if runner is not None:
                        runner.cancel()
                        await asyncio.gather(runner, return_exceptions=True)
                        runner = None
                    return await self._back_to_source(dl, schedule)
                if schedule.action == "parents" or schedule.digests:
                    swarm.update(schedule)
                    if runner is None and schedule.action == "parents":
                        runner = asyncio.get_running_loop().create_task(swarm.run())
                if schedule.action == "done" and tf.missing():
                    raise ToolError(f"the scheduler ended {tf.task}: {schedule.reason or 'done'}")
                dl.wake.clear()
                waits: list[asyncio.Future[object]] = [asyncio.ensure_future(dl.wake.wait())]
                if runner is not None:
                    waits.append(runner)  # type: ignore[arg-type]
                await asyncio.wait(
                    waits, timeout=schedule.retry_ms / 1000, return_when="FIRST_COMPLETED"
                )
                waits[0].cancel()
                if runner is not None and runner.done() and runner.exception() is not None:
                    raise ToolError(f"{tf.task}: {runner.exception()!r}")
                try:
                    schedule = await self._report(dl, swarm)
                except NotFound as exc:
                    log.info("%s: %s; registering again", tf.task, exc)
                    schedule = await self._register(dl)
            with contextlib.suppress(NotFound):
                await self._report(dl, swarm)
        finally:
            if runner is not None:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
        await asyncio.to_thread(self.store.verify, tf)
        self.store.completed(tf)
        await self._finish(dl, "succeeded")
        return "succeeded"

    async def _report(self, dl: _Download, swarm: SwarmDownload) -> api.Schedule:
        done, failures, moved = swarm.take_report()
        report = api.Report(
            dl.peer_id,
            done=tuple(done),
            digests_known=len(swarm.digests),
            failed=tuple(failures),
            bytes_from_peers=moved,
        )
        return await self._call(self.scheduler.report(dl.tf.task, report))

    async def _back_to_source(self, dl: _Download, schedule: api.Schedule) -> api.FinishOutcome:
        tf = dl.tf
        pending: list[str] = []
        done: list[int] = []
        sent = 0
        source_bytes = self.counters.bytes_from_source

        def on_piece(n: int, hexd: str) -> None:
            pending.append(hexd)
            done.append(n)

        async def flush() -> None:
            nonlocal sent, source_bytes
            if not pending and not done:
                return
            batch, numbers = list(pending), list(done)
            pending.clear()
            done.clear()
            moved = self.counters.bytes_from_source - source_bytes
            source_bytes += moved
            report = api.Report(
                dl.peer_id,
                done=tuple(numbers),
                source_digests_from=sent,
                source_digests=tuple(batch),
                bytes_from_source=moved,
            )
            sent += len(batch)
            await self._call(self.scheduler.report(tf.task, report))

        async def reporter() -> None:
            while True:
                await asyncio.sleep(schedule.retry_ms / 1000)
                with contextlib.suppress(_Unreachable):
                    await flush()

        task = asyncio.get_running_loop().create_task(reporter())
        try:
            known = await fetch_from_source(
                self.session,
                self.store,
                tf,
                dl.source,
                dl.headers,
                counters=self.counters,
                limiter=self.source_limit,
                on_piece=on_piece,
            )
        except LaminaError:
            dl.outcome = "back_to_source_failed"
            raise
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(_Unreachable):
            await flush()
        await asyncio.to_thread(self.store.verify, tf, known)
        self.store.completed(tf)
        await self._finish(dl, "succeeded")
        return "succeeded"

    async def _finish(self, dl: _Download, outcome: api.FinishOutcome) -> None:
        try:
            await self.scheduler.finish(dl.tf.task, dl.peer_id, outcome)
        except _failures() as exc:  # cached anyway
            log.warning("cannot tell the scheduler %s %s: %s", dl.tf.task, outcome, exc)
