"""The scheduler: hosts, tasks and peers, changed only by events applied one at a time.

Events are the methods (``announce_host``, ``register``, ``report``, ``finish``,
``leave``, ``seed_failed``, ``expire_hosts``); each runs to completion without I/O and
reads time only from the injected :class:`~lamina.p2p.api.Clock`. The caller (the
service) serializes them: one lock per process for the memory store, one lock per
task in Redis. A :class:`Decision` is the peer's :class:`~lamina.p2p.api.Schedule`
plus, when a seed host must be asked to go back to source, the :class:`SeedTrigger`
the service sends (``POST /p2p/v1/tasks/{task}/seed``).

Rules (docs/p2p.md):

- back to source: at most ``back_to_source_limit`` peers of a task at once; a live
  seed host is asked first; otherwise the registering peer goes, and a peer that found
  no parent ``RETRY_BTS`` schedules in a row goes when a slot is free and no holder
  at all could serve it (every one blocked or dead), never merely because the swarm
  is busy;
- parents: a random sample of ``SAMPLE`` holders (peers with a piece or a running
  back-to-source download), without the child, peers on its host, blocklisted
  parents, dead hosts and peers with nothing the child lacks, ranked by the policy.
  Running peers may be each other's parents (mutual exchange, not a DAG): every
  peer's upload counts toward the Kumar-Ross bound;
- digests only from back-to-source peers, in piece order; a piece is ``done`` only
  once its digest is known;
- a failed piece blocklists the parent for that child and counts against its host;
  ``corrupt`` blocklists it for the whole task.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.errors import Conflict, InvalidArgument, NotFound
from lamina.p2p import tokens
from lamina.p2p.api import (
    HOST_TTL,
    Action,
    Clock,
    FinishOutcome,
    HostInfo,
    ParentPolicy,
    PeerState,
    PeerView,
    Report,
    Schedule,
    TaskState,
)
from lamina.p2p.api import Parent as ParentRef
from lamina.p2p.scheduling.fsm import PEER_ACTIVE, peer_move, task_move
from lamina.p2p.scheduling.policy import DefaultPolicy
from lamina.p2p.scheduling.records import DIGEST_BYTES, HostRecord, PeerRecord, TaskRecord

P = PeerState
T = TaskState

SAMPLE = 15
"""Dragonfly's ``filterParentLimit``: candidates drawn at random per decision."""
SAMPLE_ROUNDS = 3
PARENT_LIMIT = 4
MAX_BACK_TO_SOURCE = 3
RETRY_BTS = 4
"""Schedules without a parent before a peer may go back to source (Dragonfly's
``retryBackToSourceLimit``) when a slot is free."""
SOURCE_ATTEMPTS = 3
"""Back-to-source failures in a row after which the task fails (a new registration
restarts it)."""
SEED_TIMEOUT = 15.0
"""Seconds a seed asked to fetch has to register before its slot goes to a peer."""
RETRY_MS = 500
WAIT_SEED_MS = 200
MAX_BLOCKED = 64
_SERVING = frozenset({P.RUNNING, P.BACK_TO_SOURCE, P.SUCCEEDED})


class UnknownHost(NotFound):
    """The host never announced itself, or went silent: announce it again."""


class UnknownPeer(NotFound):
    """The task or peer is not registered (a restarted scheduler, or a left peer)."""


@dataclass(frozen=True, slots=True)
class SeedTrigger:
    task: str
    host: HostInfo
    size: int
    source: str


@dataclass(frozen=True, slots=True)
class Decision:
    schedule: Schedule
    seed: SeedTrigger | None = None


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        swarm_key: bytes,
        *,
        policy: ParentPolicy | None = None,
        back_to_source_limit: int = 1,
        parent_limit: int = PARENT_LIMIT,
        rng: random.Random | None = None,
        hosts: dict[str, HostRecord] | None = None,
        tasks: dict[str, TaskRecord] | None = None,
    ) -> None:
        if not 1 <= back_to_source_limit <= MAX_BACK_TO_SOURCE:
            raise InvalidArgument(
                f"back_to_source_limit is {back_to_source_limit}; it must be 1 to "
                f"{MAX_BACK_TO_SOURCE}",
                hint="more peers fetching from the origin defeats the swarm",
            )
        self.clock = clock
        self.key = tokens.check_key(swarm_key)
        self.policy: ParentPolicy = policy or DefaultPolicy()
        self.bts_limit = back_to_source_limit
        self.parent_limit = parent_limit
        self.rng = rng or random.Random()
        self.hosts: dict[str, HostRecord] = {} if hosts is None else hosts
        self.tasks: dict[str, TaskRecord] = {} if tasks is None else tasks

    # -- events -------------------------------------------------------------------------

    def announce_host(self, host: HostInfo) -> None:
        rec = self.hosts.get(host.host_id)
        if rec is None:
            self.hosts[host.host_id] = HostRecord(host, self.clock.now())
        else:
            rec.info = host
            rec.last_seen = self.clock.now()

    def register(self, task: str, peer_id: str, host_id: str, size: int, source: str) -> Decision:
        host = self._live_host(host_id)
        rec = self.tasks.get(task)
        if rec is None:
            rec = self.tasks[task] = TaskRecord(task, size, source)
        elif rec.size != size:
            raise Conflict(
                f"task {task} is a blob of {rec.size} bytes; peer {peer_id} says {size}",
                hint="the size comes from the blob's descriptor; check the manifest",
            )
        if source and not rec.source:
            rec.source = source
        old = rec.peers.get(peer_id)
        if old is not None:
            if old.host_id != host_id:
                raise Conflict(f"peer {peer_id} is registered from host {old.host_id}")
            if old.state in PEER_ACTIVE:
                # a repeated registration (the answer was lost): the same peer
                return self._decide(rec, old, 0)
            self._remove(rec, old)
        if rec.state in (T.FAILED, T.LEFT):
            rec.state = task_move(rec.state, T.PENDING)
            rec.bts_failures = 0
        elif rec.state is T.SUCCEEDED and not rec.holders:
            rec.state = task_move(rec.state, T.RUNNING)
        peer = PeerRecord(peer_id, host_id, self.clock.now())
        rec.peers[peer_id] = peer
        host.peers.append((task, peer_id))
        return self._decide(rec, peer, 0)

    def report(self, task: str, report: Report) -> Decision:
        rec, peer = self._peer(task, report.peer_id)
        if peer.state not in PEER_ACTIVE:
            return Decision(self._done(rec, peer))
        now = self.clock.now()
        if report.source_digests:
            if peer.state is not P.BACK_TO_SOURCE:
                raise InvalidArgument(
                    f"peer {peer.peer_id} reported source digests but is not back to source",
                    hint="piece digests come only from a back-to-source download",
                )
            self._add_digests(rec, report.source_digests_from, report.source_digests)
        self._add_done(rec, peer, report.done, now)
        resched = False
        for f in report.failed:
            if f.parent_id == peer.peer_id:
                raise InvalidArgument(f"peer {peer.peer_id} reported a failure of itself")
            if peer.blocked is None:
                peer.blocked = set()
            if len(peer.blocked) < MAX_BLOCKED:
                peer.blocked.add(f.parent_id)
            parent = rec.peers.get(f.parent_id)
            if parent is not None:
                phost = self.hosts.get(parent.host_id)
                if phost is not None:
                    phost.upload_failed += 1
            if f.reason == "corrupt":
                rec.blocked.add(f.parent_id)
            resched = resched or f.parent_id in peer.parents
        rec.bytes_from_source += report.bytes_from_source
        rec.bytes_from_peers += report.bytes_from_peers
        # a running peer that got nothing since its last report is starving on its
        # parents: sample afresh rather than keep a full but busy set
        starving = not report.done and peer.state is P.RUNNING
        return self._decide(rec, peer, report.digests_known, force=resched or starving)

    def finish(self, task: str, peer_id: str, outcome: FinishOutcome, reason: str = "") -> None:
        rec, peer = self._peer(task, peer_id)
        new = P.SUCCEEDED if outcome == "succeeded" else P.FAILED
        if peer.state is new:
            return  # a repeated finish
        was_bts = peer.state is P.BACK_TO_SOURCE
        if new is P.SUCCEEDED and rec.digests_known < rec.count:
            # nobody can have checked pieces whose digest is unknown, and a
            # back-to-source peer must hand out every digest before it is done
            raise InvalidArgument(
                f"peer {peer_id} says it succeeded but piece digests are known for "
                f"{rec.digests_known} of {rec.count} pieces",
                hint="report every piece's source digest before finishing",
            )
        peer.state = peer_move(peer.state, new, f"peer {peer_id}")
        self._set_parents(rec, peer, ())
        if was_bts:
            rec.bts.remove(peer_id)
        if new is P.SUCCEEDED:
            peer.bits = (1 << rec.count) - 1
            peer.held = rec.count
            rec.add_holder(peer)
            rec.bts_failures = 0
            if rec.state is not T.SUCCEEDED:
                if rec.state is T.PENDING:
                    rec.state = task_move(rec.state, T.RUNNING)
                rec.state = task_move(rec.state, T.SUCCEEDED)
            return
        rec.drop_holder(peer)
        if outcome == "back_to_source_failed" or was_bts:
            rec.bts_failures += 1
            if (
                rec.bts_failures >= SOURCE_ATTEMPTS
                and not rec.bts
                and not rec.seed_pending
                and not rec.holders
                and rec.state in (T.PENDING, T.RUNNING)
            ):
                rec.state = task_move(rec.state, T.FAILED)

    def leave(self, task: str, peer_id: str) -> None:
        rec = self.tasks.get(task)
        peer = rec.peers.get(peer_id) if rec else None
        if rec is None or peer is None:
            return  # leaving twice is leaving
        self._remove(rec, peer)
        host = self.hosts.get(peer.host_id)
        if host is not None:
            with contextlib.suppress(ValueError):
                host.peers.remove((task, peer_id))
        if not rec.peers:
            task_move(rec.state, T.LEFT)
            del self.tasks[task]

    def seed_failed(self, task: str, host_id: str) -> None:
        """The seed host could not be asked to fetch: its slot is free again."""
        rec = self.tasks.get(task)
        if rec is not None and rec.seed_pending == host_id:
            rec.seed_pending = ""
            rec.bts_failures += 1

    def expire_hosts(self) -> list[str]:
        """Hosts silent for ``HOST_TTL`` are gone, with their peers."""
        deadline = self.clock.now() - HOST_TTL
        dead = [h for h, rec in self.hosts.items() if rec.last_seen < deadline]
        for host_id in dead:
            self.drop_host(host_id)
        return dead

    def drop_host(self, host_id: str) -> None:
        host = self.hosts.pop(host_id, None)
        if host is None:
            return
        for task, peer_id in list(host.peers):
            self.leave(task, peer_id)
        for rec in self.tasks.values():
            if rec.seed_pending == host_id:
                rec.seed_pending = ""

    # -- reads --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "hosts": [
                {
                    "host_id": h.info.host_id,
                    "addr": h.info.addr,
                    "seed": h.info.seed,
                    "rack": h.info.rack,
                    "upload_slots": h.info.upload_slots,
                    "seen_ago": round(now - h.last_seen, 3),
                    "upload_ok": h.upload_ok,
                    "upload_failed": h.upload_failed,
                }
                for h in self.hosts.values()
            ],
            "tasks": [
                {
                    "task": t.task,
                    "state": t.state.value,
                    "size": t.size,
                    "pieces": t.count,
                    "digests_known": t.digests_known,
                    "peers": [
                        {"peer_id": p.peer_id, "state": p.state.value, "pieces": p.held}
                        for p in t.peers.values()
                    ],
                    "bytes_from_source": t.bytes_from_source,
                    "bytes_from_peers": t.bytes_from_peers,
                }
                for t in self.tasks.values()
            ],
        }

    # -- the decision -------------------------------------------------------------------

    def _decide(
        self, rec: TaskRecord, peer: PeerRecord, digests_known: int, *, force: bool = False
    ) -> Decision:
        now = self.clock.now()
        if rec.state is T.FAILED and peer.state in PEER_ACTIVE:
            peer.state = peer_move(peer.state, P.FAILED)
            self._set_parents(rec, peer, ())
            rec.drop_holder(peer)
            return Decision(self._done(rec, peer, "every back-to-source attempt failed"))
        if peer.state not in PEER_ACTIVE:
            return Decision(self._done(rec, peer))
        if peer.state is P.BACK_TO_SOURCE:
            return Decision(self._schedule(rec, "back_to_source", digests_known))
        if rec.seed_pending and (
            now - rec.seed_since > SEED_TIMEOUT or not self._alive(rec.seed_pending, now)
        ):
            rec.seed_pending = ""
        if rec.size == 0:
            # nothing to share: an empty blob costs the origin nothing
            return Decision(self._go_to_source(rec, peer, digests_known, "empty blob"))
        host = self.hosts[peer.host_id]
        if rec.seed_pending == peer.host_id:
            rec.seed_pending = ""  # the seed we asked has come: it takes its slot
            return Decision(self._go_to_source(rec, peer, digests_known, "seed"))
        free_slot = len(rec.bts) + bool(rec.seed_pending) < self.bts_limit
        if host.info.seed and free_slot and not rec.bts:
            return Decision(self._go_to_source(rec, peer, digests_known, "seed"))
        supplier = bool(rec.bts or rec.seed_pending or self._others_hold(rec, peer))
        if free_slot and not supplier:
            seed = self._pick_seed(rec, peer)
            if seed is not None:
                rec.seed_pending = seed.info.host_id
                rec.seed_since = now
                trigger = SeedTrigger(rec.task, seed.info, rec.size, rec.source)
                sched = self._schedule(
                    rec,
                    "wait",
                    digests_known,
                    retry_ms=WAIT_SEED_MS,
                    reason=f"seed {seed.info.host_id} is fetching from the source",
                )
                return Decision(sched, trigger)
            return Decision(self._go_to_source(rec, peer, digests_known, "first download"))
        parents = self._parents(rec, peer, force)
        if parents:
            peer.waits = 0
            if peer.state is P.PENDING:
                peer.state = peer_move(peer.state, P.RUNNING)
            if rec.state is T.PENDING:
                rec.state = task_move(rec.state, T.RUNNING)
            refs = tuple(
                ParentRef(p.peer_id, p.host_id, self.hosts[p.host_id].info.addr) for p in parents
            )
            return Decision(self._schedule(rec, "parents", digests_known, parents=refs))
        peer.waits += 1
        if free_slot and peer.waits >= RETRY_BTS and not self._any_usable(rec, peer):
            return Decision(self._go_to_source(rec, peer, digests_known, "no parent found"))
        return Decision(
            self._schedule(rec, "wait", digests_known, reason="no peer has a piece yet")
        )

    def _go_to_source(
        self, rec: TaskRecord, peer: PeerRecord, digests_known: int, reason: str
    ) -> Schedule:
        peer.state = peer_move(peer.state, P.BACK_TO_SOURCE)
        self._set_parents(rec, peer, ())
        rec.bts.append(peer.peer_id)
        rec.add_holder(peer)
        if rec.state is T.PENDING:
            rec.state = task_move(rec.state, T.RUNNING)
        return self._schedule(rec, "back_to_source", digests_known, reason=reason)

    def _parents(self, rec: TaskRecord, peer: PeerRecord, force: bool) -> list[PeerRecord]:
        now = self.clock.now()
        current = [
            p
            for pid in peer.parents
            if (p := rec.peers.get(pid)) is not None and self._usable(rec, peer, p, now)
        ]
        if not force and len(current) == len(peer.parents) >= self.parent_limit:
            return current  # keep a full, working set: no churn between reports
        chosen: dict[str, PeerRecord] = {p.peer_id: p for p in current}
        pool = rec.holders
        for _ in range(SAMPLE_ROUNDS):
            ids = pool if len(pool) <= SAMPLE else self.rng.sample(pool, SAMPLE)
            for pid in ids:
                if pid not in chosen:
                    p = rec.peers[pid]
                    if self._usable(rec, peer, p, now):
                        chosen[pid] = p
            if len(chosen) > len(current) or len(pool) <= SAMPLE:
                break
        if not chosen:
            self._set_parents(rec, peer, ())
            return []
        child = self._view(rec, peer, mine=False)
        views = [self._view(rec, p, mine=p.peer_id in peer.parents) for p in chosen.values()]
        picked = [chosen[v.peer_id] for v in self.policy.choose(child, views, self.parent_limit)]
        self._set_parents(rec, peer, tuple(p.peer_id for p in picked))
        return picked

    def _any_usable(self, rec: TaskRecord, peer: PeerRecord) -> bool:
        # a full scan, only after RETRY_BTS empty samples: the source is the last
        # resort, for a peer every holder is blocked or dead for, not a busy swarm
        now = self.clock.now()
        return any(self._usable(rec, peer, rec.peers[pid], now) for pid in rec.holders)

    def _usable(self, rec: TaskRecord, child: PeerRecord, p: PeerRecord, now: float) -> bool:
        if p is child or p.host_id == child.host_id or p.state not in _SERVING:
            return False
        if p.peer_id in rec.blocked or (child.blocked and p.peer_id in child.blocked):
            return False
        if not self._alive(p.host_id, now):
            return False
        # a back-to-source peer will have more; anyone else must hold a piece it lacks
        return p.state is P.BACK_TO_SOURCE or bool(p.bits & ~child.bits)

    def _view(self, rec: TaskRecord, p: PeerRecord, *, mine: bool) -> PeerView:
        host = self.hosts[p.host_id]
        return PeerView(
            peer_id=p.peer_id,
            host=host.info,
            state=p.state,
            pieces_held=p.held,
            piece_total=rec.count,
            # the child's own slot on a current parent is not load against it
            uploads_active=p.children - mine,
            upload_ok=host.upload_ok,
            upload_failed=host.upload_failed,
            piece_costs=tuple(p.costs) if p.costs else (),
        )

    def _set_parents(self, rec: TaskRecord, peer: PeerRecord, ids: tuple[str, ...]) -> None:
        if ids == peer.parents:
            return
        for pid in peer.parents:
            if (p := rec.peers.get(pid)) is not None:
                p.children -= 1
        for pid in ids:
            rec.peers[pid].children += 1
        peer.parents = ids

    def _others_hold(self, rec: TaskRecord, peer: PeerRecord) -> bool:
        return any(pid != peer.peer_id for pid in rec.holders[:2])

    def _pick_seed(self, rec: TaskRecord, peer: PeerRecord) -> HostRecord | None:
        now = self.clock.now()
        seeds = [
            h
            for h in self.hosts.values()
            if h.info.seed
            and h.info.host_id != peer.host_id
            and now - h.last_seen <= HOST_TTL
            and not any(
                p.host_id == h.info.host_id for p in rec.peers.values() if p.state in PEER_ACTIVE
            )
        ]
        if not seeds:
            return None
        return min(seeds, key=lambda h: (len(h.peers), h.info.host_id))

    # -- pieces and digests -------------------------------------------------------------

    def _add_digests(self, rec: TaskRecord, start: int, digests: tuple[str, ...]) -> None:
        known = rec.digests_known
        if start > known:
            raise InvalidArgument(
                f"source digests from piece {start}, but only {known} are known: "
                "digests come in piece order"
            )
        if start + len(digests) > rec.count:
            raise InvalidArgument(
                f"source digests up to piece {start + len(digests) - 1}; "
                f"the blob has {rec.count} pieces"
            )
        for i, hexd in enumerate(digests):
            n = start + i
            raw = bytes.fromhex(hexd)
            if n < known:
                if rec.digests[n * DIGEST_BYTES : (n + 1) * DIGEST_BYTES] != raw:
                    # two back-to-source peers saw different bytes: the source changed
                    raise Conflict(
                        f"piece {n} of {rec.task}: a back-to-source peer reports a digest "
                        "other than the one already known",
                        hint="the upstream served different bytes for one digest",
                    )
            else:
                rec.digests += raw

    def _add_done(
        self, rec: TaskRecord, peer: PeerRecord, done: tuple[int, ...], now: float
    ) -> None:
        if not done:
            return
        known = rec.digests_known
        bits = 0
        for n in done:
            if n >= known:
                raise InvalidArgument(
                    f"peer {peer.peer_id} reports piece {n} done, but "
                    f"{'the blob has' if n >= rec.count else 'digests are known for'} "
                    f"{rec.count if n >= rec.count else known} pieces",
                    hint="a piece counts once it is checked against its source digest",
                )
            bits |= 1 << n
        added = bits & ~peer.bits
        if not added:
            return
        k = added.bit_count()
        peer.bits |= added
        peer.held += k
        peer.add_cost((now - peer.last_report) / k)
        peer.last_report = now
        rec.add_holder(peer)
        for pid in peer.parents:
            if (p := rec.peers.get(pid)) is not None and (h := self.hosts.get(p.host_id)):
                h.upload_ok += 1

    # -- helpers ------------------------------------------------------------------------

    def _schedule(
        self,
        rec: TaskRecord,
        action: Action,
        digests_known: int,
        *,
        parents: tuple[ParentRef, ...] = (),
        retry_ms: int = RETRY_MS,
        reason: str = "",
    ) -> Schedule:
        known = rec.digests_known
        start = min(digests_known, known)
        d = rec.digests
        digests = tuple(
            d[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES].hex() for i in range(start, known)
        )
        return Schedule(
            action=action,
            size=rec.size,
            piece_length=rec.piece_length,
            parents=parents,
            digests_from=start,
            digests=digests,
            token=tokens.mint(self.key, rec.task, self.clock.now()),
            retry_ms=retry_ms,
            reason=reason,
        )

    def _done(self, rec: TaskRecord, peer: PeerRecord, reason: str = "") -> Schedule:
        return Schedule(
            action="done",
            size=rec.size,
            piece_length=rec.piece_length,
            retry_ms=0,
            reason=reason or f"the peer has {peer.state.value}",
        )

    def _remove(self, rec: TaskRecord, peer: PeerRecord) -> None:
        self._set_parents(rec, peer, ())
        if peer.children:
            # its children drop it now: a peer registering again under this id must
            # not inherit their slots (a scan, but only of a task whose parent left)
            gone = peer.peer_id
            for c in rec.peers.values():
                if gone in c.parents:
                    c.parents = tuple(q for q in c.parents if q != gone)
                    peer.children -= 1
                    if not peer.children:
                        break
        rec.drop_holder(peer)
        if peer.peer_id in rec.bts:
            rec.bts.remove(peer.peer_id)
        peer.state = P.LEFT
        del rec.peers[peer.peer_id]

    def _alive(self, host_id: str, now: float) -> bool:
        h = self.hosts.get(host_id)
        return h is not None and now - h.last_seen <= HOST_TTL

    def _live_host(self, host_id: str) -> HostRecord:
        h = self.hosts.get(host_id)
        if h is None or not self._alive(host_id, self.clock.now()):
            raise UnknownHost(
                f"host {host_id} has not announced itself (or went silent)",
                hint="POST /v1/hosts first, and again every 5 s",
            )
        return h

    def _peer(self, task: str, peer_id: str) -> tuple[TaskRecord, PeerRecord]:
        rec = self.tasks.get(task)
        peer = rec.peers.get(peer_id) if rec else None
        if rec is None or peer is None:
            raise UnknownPeer(
                f"peer {peer_id} is not registered for task {task}",
                hint="register again (the scheduler may have restarted without a store)",
            )
        return rec, peer


def views_of(sched: Scheduler, task: str) -> Mapping[str, PeerState]:
    """Each peer's state in ``task`` (for tests and the simulator)."""
    rec = sched.tasks.get(task)
    return {} if rec is None else {p.peer_id: p.state for p in rec.peers.values()}
