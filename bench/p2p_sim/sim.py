"""A discrete-event simulation of one swarm around the pure scheduler.

The network: every peer uploads at ``up`` and downloads at ``down`` (bits/s), split
into fixed slots (``UP_SLOTS`` uploads of ``up/UP_SLOTS`` each, ``DOWN_SLOTS``
downloads of ``down/DOWN_SLOTS``), so a piece transfer runs at
``min(up/UP_SLOTS, down/DOWN_SLOTS)`` and its end time is known when it starts (no
re-sharing of bandwidth: a simplification that can only leave capacity idle, never
invent any). The origin serves the back-to-source peer at ``origin`` bits/s, one piece
after another.

Peers behave as ``lamina.p2p.peer`` is specified to: register, fetch pieces whose
digest the scheduler has handed out from the parents of their last schedule (random
piece among those a parent has, so pieces spread), see a parent's new pieces at once
(the bitfield long poll), report every ``REPORT_S`` seconds when something changed
or they are idle, finish when they hold every piece. The back-to-source peer reports
the piece digests as it fetches them. Every scheduler call is timed (wall clock,
``perf_counter``); simulated time is separate.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
from dataclasses import dataclass, field

from lamina.p2p.api import HostInfo, Report, Schedule
from lamina.p2p.pieces import piece_count, piece_length
from lamina.p2p.scheduling.scheduler import Scheduler

UP_SLOTS = 2
DOWN_SLOTS = 8
REPORT_S = 0.5
HEARTBEAT_S = 5.0
KEY = b"simulated-swarm-key!"
TASK = "sha256:" + "5" * 64


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


@dataclass
class SimPeer:
    n: int
    peer_id: str
    host_id: str
    bits: int = 0
    inflight: int = 0
    downs: int = 0
    ups: int = 0
    parents: list[int] = field(default_factory=list)
    known: int = 0
    new_done: list[int] = field(default_factory=list)
    new_digests_from: int = 0
    bts: bool = False
    done_at: float = -1.0
    children: set[int] = field(default_factory=set)
    action: str = ""


@dataclass
class Result:
    n: int
    size: int
    pieces: int
    completion: list[float]
    decisions: list[float]
    origin_bytes: int
    bound: float
    events: int
    wall: float


def kumar_ross(size: int, n: int, origin: float, up: float, down: float) -> float:
    bits = size * 8
    return max(bits / origin, bits / down, n * bits / (origin + n * up))


def simulate(
    n: int,
    *,
    size: int = 256 << 20,
    up: float = 50e6,
    down: float = 200e6,
    origin: float = 100e6,
    seed: int = 1,
    racks: int = 10,
    arrival_s: float = 1.0,
) -> Result:
    rng = random.Random(seed)
    clock = SimClock()
    sched = Scheduler(clock, KEY, rng=random.Random(seed + 1))
    plen = piece_length(size)
    count = piece_count(size, plen)
    full = (1 << count) - 1
    digests = [hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(count)]
    rate = min(up / UP_SLOTS, down / DOWN_SLOTS)
    piece_s = [
        (min(plen, size - i * plen) * 8) / rate for i in range(count)
    ]  # peer-to-peer transfer time of each piece
    origin_s = [(min(plen, size - i * plen) * 8) / min(origin, down) for i in range(count)]
    have = [0] * count
    peers: list[SimPeer] = []
    by_id: dict[str, int] = {}
    events: list[tuple[float, int, int, int, int, int]] = []
    # (time, seq, kind, a, b, piece): kinds below
    ARRIVE, REPORT, XFER, SOURCE = 0, 1, 2, 3
    seq = 0
    decisions: list[float] = []
    origin_bytes = 0
    n_events = 0

    def push(t: float, kind: int, a: int, b: int = 0, piece: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, a, b, piece))

    def apply(p: SimPeer, s: Schedule) -> None:
        p.action = s.action
        p.known = max(p.known, s.digests_from + len(s.digests))
        if s.action == "back_to_source" and not p.bts:
            p.bts = True
            p.parents = []
            push(clock.t + origin_s[0], SOURCE, p.n, 0, 0)
        elif s.action == "parents":
            new = [by_id[x.peer_id] for x in s.parents]
            for q in p.parents:
                peers[q].children.discard(p.n)
            for q in new:
                peers[q].children.add(p.n)
            p.parents = new
        elif s.action == "wait":
            p.parents = []

    def timed_report(p: SimPeer) -> None:
        r = Report(
            p.peer_id,
            done=tuple(p.new_done),
            digests_known=p.known,
            source_digests_from=p.new_digests_from if p.bts else 0,
            source_digests=tuple(digests[p.new_digests_from : p.known]) if p.bts else (),
        )
        # the heartbeat (every 5 s in a real peer; here with each report, cheaper)
        sched.hosts[p.host_id].last_seen = clock.t
        t0 = time.perf_counter()
        s = sched.report(TASK, r).schedule
        decisions.append(time.perf_counter() - t0)
        p.new_done = []
        p.new_digests_from = p.known
        apply(p, s)

    def fill(c: SimPeer) -> None:
        """Start downloads on c's free slots from parents with a free upload slot."""
        if c.done_at >= 0 or c.bts:
            return
        known_mask = (1 << c.known) - 1
        want = known_mask & ~c.bits & ~c.inflight
        if not want or c.downs >= DOWN_SLOTS:
            return
        order = c.parents[:]
        rng.shuffle(order)
        for q in order:
            pq = peers[q]
            while pq.ups < UP_SLOTS and c.downs < DOWN_SLOTS:
                avail = pq.bits & want
                if not avail:
                    break
                # rarest first (real peers count among their parents' bitfields;
                # the simulation knows the swarm's counts), ties at random
                choices = [i for i in range(count) if avail >> i & 1]
                low = min(have[i] for i in choices)
                piece = rng.choice([i for i in choices if have[i] == low])
                want &= ~(1 << piece)
                c.inflight |= 1 << piece
                c.downs += 1
                pq.ups += 1
                push(clock.t + piece_s[piece], XFER, c.n, q, piece)
            if c.downs >= DOWN_SLOTS or not want:
                return

    for i in range(n):
        hid = f"host-{i:05d}"
        sched.announce_host(
            HostInfo(
                hid,
                f"http://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:4001",
                rack=f"dc1|r{rng.randrange(racks)}",
            )
        )
        p = SimPeer(i, f"{hid}/{TASK}", hid)
        peers.append(p)
        by_id[p.peer_id] = i
        push(rng.uniform(0, arrival_s), ARRIVE, i)

    wall0 = time.perf_counter()
    finished = 0
    give_up = 50 * kumar_ross(size, n, origin, up, down)
    while events and finished < n:
        t, _, kind, a, b, piece = heapq.heappop(events)
        if t > give_up:
            break  # a stuck swarm: reported as unfinished peers
        n_events += 1
        clock.t = t
        p = peers[a]
        if kind == ARRIVE:
            t0 = time.perf_counter()
            s = sched.register(TASK, p.peer_id, p.host_id, size, "http://origin/blob").schedule
            decisions.append(time.perf_counter() - t0)
            apply(p, s)
            fill(p)
            push(t + REPORT_S, REPORT, a)
        elif kind == REPORT:
            if p.done_at >= 0:
                sched.hosts[p.host_id].last_seen = t  # a finished peer still heartbeats
                push(t + HEARTBEAT_S, REPORT, a)
                continue
            idle = p.downs == 0 and not p.bts
            if p.new_done or idle or p.action == "wait":
                timed_report(p)
                fill(p)
            push(t + REPORT_S, REPORT, a)
        elif kind == SOURCE:
            p.bits |= 1 << piece
            have[piece] += 1
            p.known = piece + 1
            p.new_done.append(piece)
            origin_bytes += min(plen, size - piece * plen)
            if piece + 1 < count:
                push(t + origin_s[piece + 1], SOURCE, a, 0, piece + 1)
            for c in list(p.children):
                fill(peers[c])
        else:  # XFER: child a got piece from parent b
            q = peers[b]
            q.ups -= 1
            p.downs -= 1
            p.inflight &= ~(1 << piece)
            p.bits |= 1 << piece
            have[piece] += 1
            p.new_done.append(piece)
            fill(p)
            for c in list(p.children):
                fill(peers[c])
            for c in list(q.children):
                fill(peers[c])
        if p.bits == full and p.done_at < 0:
            p.done_at = t
            finished += 1
            if p.new_done or p.bts:
                timed_report(p)
            sched.finish(TASK, p.peer_id, "succeeded")
            # a finished peer keeps serving: its children are woken as usual
            for c in list(p.children):
                fill(peers[c])
    wall = time.perf_counter() - wall0
    return Result(
        n=n,
        size=size,
        pieces=count,
        completion=sorted(p.done_at for p in peers if p.done_at >= 0),
        decisions=decisions,
        origin_bytes=origin_bytes,
        bound=kumar_ross(size, n, origin, up, down),
        events=n_events,
        wall=wall,
    )
