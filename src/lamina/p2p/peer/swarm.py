"""Fetching one task's pieces from its parents.

- Each parent's bitfield is long-polled (its HAVE stream); a piece is asked of a parent
  only once its bit is set there and its digest is known from the scheduler.
- Up to ``concurrency`` pieces in flight (8, as Dragonfly's client since 2025), fewer
  when pieces are large, since a piece is held in memory until it is verified: at most
  64 MiB of piece buffers at once.
- Rarest first among the parents' bitfields, random among equals; the very first piece
  is random (a newcomer should have *something* to trade quickly).
- Endgame: when every missing piece is in flight and at most 3 remain, each is asked of
  a second parent too; the first verified copy wins, the other request is cancelled.
- Every piece is checked against the scheduler's sha256 before it is written; a parent
  that sends a wrong piece is reported ``corrupt`` and not asked again. Timeouts and
  errors are reported too; a busy parent (503) or a stale bit (404) is not its fault.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lamina.errors import LaminaError
from lamina.http import network_errors
from lamina.p2p import api
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket, take
from lamina.p2p.peer.storage import PieceStore, TaskFile

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

ENDGAME = 3
BUFFER_BUDGET = 64 << 20
_CHUNK = 256 << 10


def _failures() -> tuple[type[BaseException], ...]:
    """What a network call can raise that is not a bug: lamina's errors, the OS's, aiohttp's."""
    return (LaminaError, OSError, ValueError, KeyError, *network_errors())


@dataclass
class _Link:
    parent: api.Parent
    bits: bytes = b""
    version: int = -1
    inflight: int = 0
    dead: bool = False
    busy_until: float = 0.0
    poller: asyncio.Task[None] | None = None

    def has(self, n: int) -> bool:
        return len(self.bits) > n >> 3 and bool(self.bits[n >> 3] & (0x80 >> (n & 7)))


class _Failure(Exception):
    def __init__(self, reason: api.PieceFailureReason | None, why: str) -> None:
        super().__init__(why)
        self.reason = reason


@dataclass
class SwarmDownload:
    """Pulls the missing pieces of ``tf`` from the scheduled parents. :meth:`update`
    feeds it each new schedule; :meth:`take_report` drains what happened since."""

    store: PieceStore
    tf: TaskFile
    session: aiohttp.ClientSession
    counters: Counters
    limiter: TokenBucket | None = None
    concurrency: int = 8
    piece_timeout: float = 30.0
    on_event: Callable[[], None] = lambda: None
    """Called when something worth an early report happened (a failure)."""
    token: str = ""
    digests: list[str] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    failures: list[api.PieceFailure] = field(default_factory=list)
    bytes_from_peers: int = 0
    _links: dict[str, _Link] = field(default_factory=dict)
    _banned: set[str] = field(default_factory=set)
    _inflight: dict[int, dict[str, asyncio.Task[None]]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        budget = max(1, BUFFER_BUDGET // max(self.tf.piece_length, 1))
        self.concurrency = max(1, min(self.concurrency, budget))

    # ---- fed by the engine ----

    def update(self, schedule: api.Schedule) -> None:
        if schedule.token:
            self.token = schedule.token
        if schedule.digests and schedule.digests_from <= len(self.digests):
            self.digests[schedule.digests_from :] = list(schedule.digests)
        for parent in schedule.parents:
            if parent.peer_id in self._banned or parent.peer_id in self._links:
                continue
            link = _Link(parent)
            self._links[parent.peer_id] = link
            link.poller = asyncio.get_running_loop().create_task(self._poll(link))
        self._wake.set()

    def take_report(self) -> tuple[list[int], list[api.PieceFailure], int]:
        done, failures, moved = self.done, self.failures, self.bytes_from_peers
        self.done, self.failures, self.bytes_from_peers = [], [], 0
        return done, failures, moved

    @property
    def stalled(self) -> bool:
        """Nothing in flight and no live parent holds a missing piece we can check."""
        return not self._inflight and not self._candidates()

    # ---- the loop ----

    async def run(self) -> None:
        """Return once every piece is held; cancel to stop."""
        try:
            while self.tf.missing():
                self._dispatch()
                await self._wake.wait()
                self._wake.clear()
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = [t for by in self._inflight.values() for t in by.values()]
        tasks += [link.poller for link in self._links.values() if link.poller]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _usable(self, link: _Link, now: float) -> bool:
        return not link.dead and link.busy_until <= now

    def _candidates(self) -> dict[int, list[_Link]]:
        now = asyncio.get_running_loop().time()
        links = [link for link in self._links.values() if self._usable(link, now)]
        found: dict[int, list[_Link]] = {}
        for n in range(min(self.tf.count, len(self.digests))):
            if self.tf.has(n):
                continue
            holders = [link for link in links if link.has(n)]
            if holders:
                found[n] = holders
        return found

    def _dispatch(self) -> None:
        candidates = self._candidates()
        running = sum(len(by) for by in self._inflight.values())
        fresh = [n for n in candidates if n not in self._inflight]
        if self.tf.held() == 0 and not self._inflight:
            random.shuffle(fresh)  # random first piece
        else:
            random.shuffle(fresh)  # random among equals, then the stable sort: rarest first
            fresh.sort(key=lambda n: len(candidates[n]))
        for n in fresh:
            if running >= self.concurrency:
                break
            self._start(n, self._pick(candidates[n], ()))
            running += 1
        missing = self.tf.missing()
        if len(missing) <= ENDGAME and all(n in self._inflight for n in missing):
            for n in missing:
                asked = self._inflight[n]
                others = [
                    link for link in candidates.get(n, []) if link.parent.peer_id not in asked
                ]
                if len(asked) == 1 and others:
                    self._start(n, self._pick(others, ()))

    def _pick(self, holders: list[_Link], _skip: tuple[str, ...]) -> _Link:
        random.shuffle(holders)
        return min(holders, key=lambda link: link.inflight)

    def _start(self, n: int, link: _Link) -> None:
        link.inflight += 1
        task = asyncio.get_running_loop().create_task(self._fetch(n, link))
        self._inflight.setdefault(n, {})[link.parent.peer_id] = task

    async def _fetch(self, n: int, link: _Link) -> None:
        peer_id = link.parent.peer_id
        try:
            async with asyncio.timeout(self.piece_timeout):
                data = await self._get(n, link)
            want = self.digests[n]
            ok = await asyncio.to_thread(self._check_and_write, n, data, want)
            if ok is None:
                raise _Failure("corrupt", f"piece {n} from {peer_id} does not match its digest")
            if ok:
                self.tf.mark(n)
                self.done.append(n)
                self.bytes_from_peers += len(data)
                self.counters.bytes_from_peers += len(data)
                for other, task in self._inflight.get(n, {}).items():
                    if other != peer_id:
                        task.cancel()  # endgame: the loser stops
        except asyncio.CancelledError:
            raise
        except _Failure as failure:
            self._failed(n, link, failure.reason, str(failure))
        except TimeoutError:
            self._failed(n, link, "timeout", f"piece {n} from {peer_id} timed out")
        except _failures() as exc:  # the parent's fault
            link.dead = True
            self._failed(n, link, "error", f"piece {n} from {peer_id}: {exc!r}")
        finally:
            link.inflight -= 1
            by = self._inflight.get(n, {})
            if by.get(peer_id) is asyncio.current_task():
                del by[peer_id]
            if not by:
                self._inflight.pop(n, None)
            self._wake.set()

    def _failed(self, n: int, link: _Link, reason: api.PieceFailureReason | None, why: str) -> None:
        log.info("%s: %s", self.tf.task, why)
        if reason is None:
            return
        if reason == "corrupt":
            self.counters.pieces_corrupt += 1
        if reason in ("corrupt", "error"):
            link.dead = True
            self._banned.add(link.parent.peer_id)
        self.failures.append(api.PieceFailure(n, link.parent.peer_id, reason))
        self.on_event()

    async def _get(self, n: int, link: _Link) -> bytearray:
        start, end = self.tf.span(n)
        url = f"{link.parent.addr.rstrip('/')}/p2p/v1/tasks/{self.tf.task}/pieces/{n}"
        headers = {"Authorization": f"Swarm {self.token}"}
        async with self.session.get(url, headers=headers) as resp:
            if resp.status == 503:
                link.busy_until = asyncio.get_running_loop().time() + 1.0
                raise _Failure(None, f"{link.parent.peer_id} is busy")
            if resp.status == 404:
                link.bits = b""  # stale: wait for its next bitfield
                raise _Failure(None, f"{link.parent.peer_id} does not hold piece {n}")
            if resp.status in (401, 403):
                raise _Failure("refused", f"{link.parent.peer_id} refused our token")
            if resp.status != 200:
                raise _Failure("error", f"{link.parent.peer_id} answered {resp.status}")
            buffer = bytearray(end - start)
            view = memoryview(buffer)
            got = 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                if got + len(chunk) > len(buffer):
                    raise _Failure("corrupt", f"piece {n} from {link.parent.peer_id} is too long")
                await take(self.limiter, len(chunk))
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
            if got != len(buffer):
                raise _Failure("error", f"piece {n} from {link.parent.peer_id} was cut short")
            return buffer

    def _check_and_write(self, n: int, data: bytearray, want: str) -> bool | None:
        """None: corrupt; False: already held; True: written (worker thread)."""
        if hashlib.sha256(data).hexdigest() != want:
            return None
        return self.store.write_piece(self.tf, n, data)

    async def _poll(self, link: _Link) -> None:
        """Long-poll one parent's bitfield until cancelled or it dies."""
        url = f"{link.parent.addr.rstrip('/')}/p2p/v1/tasks/{self.tf.task}/bitfield"
        errors = 0
        while not link.dead:
            try:
                async with asyncio.timeout(10):
                    async with self.session.get(
                        url,
                        params={"version": str(link.version)},
                        headers={"Authorization": f"Swarm {self.token}"},
                    ) as resp:
                        if resp.status != 200:
                            await asyncio.sleep(0.5)
                            continue
                        body = await resp.json()
                link.bits = base64.b64decode(body["pieces"])
                link.version = int(body["version"])
                errors = 0
                self._wake.set()
                if body.get("complete"):
                    return  # a finished parent's bitfield does not change
            except asyncio.CancelledError:
                raise
            except _failures() as exc:  # gone?
                errors += 1
                link.bits = b""
                self._wake.set()
                if errors >= 3:
                    log.info("%s: parent %s is gone: %r", self.tf.task, link.parent.peer_id, exc)
                    link.dead = True
                    return
                await asyncio.sleep(0.2 * errors)
