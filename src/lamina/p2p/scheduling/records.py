"""The scheduler's state, kept small: the simulator's target is 2 KiB a peer.

A peer's pieces are one ``int`` used as a bitfield (bit ``n`` = piece ``n``), its
recent piece costs a bounded ``array('f')``, its per-child blocklist ``None`` until a
parent fails it; the digests of a task are one ``bytearray`` of raw 32-byte sha256
values. Classes have ``__slots__`` (no per-object ``__dict__``).

``task_to_dict``/``task_from_dict`` (and the host pair) give the JSON-able form the
Redis store keeps, one value per task.
"""

from __future__ import annotations

from array import array
from typing import Any

from lamina.p2p.api import HostInfo, PeerState, TaskState
from lamina.p2p.pieces import piece_count, piece_length

COSTS_KEPT = 32
"""Recent piece costs kept per peer: enough for the bad-node test's 30-sample rule."""
DIGEST_BYTES = 32


class HostRecord:
    __slots__ = ("info", "last_seen", "peers", "upload_failed", "upload_ok")

    def __init__(self, info: HostInfo, last_seen: float) -> None:
        self.info = info
        self.last_seen = last_seen
        self.upload_ok = 0
        self.upload_failed = 0
        self.peers: list[tuple[str, str]] = []
        """``(task, peer_id)`` of its peers: a dead host's peers leave without a scan."""


class PeerRecord:
    __slots__ = (
        "bits",
        "blocked",
        "children",
        "costs",
        "held",
        "host_id",
        "last_report",
        "parents",
        "peer_id",
        "pos",
        "state",
        "waits",
    )

    def __init__(self, peer_id: str, host_id: str, now: float) -> None:
        self.peer_id = peer_id
        self.host_id = host_id
        self.state = PeerState.PENDING
        self.bits = 0
        self.held = 0
        self.parents: tuple[str, ...] = ()
        self.children = 0
        """How many children have it among their current parents (its upload load)."""
        self.blocked: set[str] | None = None
        self.costs: array[float] | None = None
        self.last_report = now
        self.pos = -1
        """Its index in ``TaskRecord.holders``, -1 when it is not there."""
        self.waits = 0
        """Schedules in a row that found it no parent (back to source after a few)."""

    def add_cost(self, seconds: float) -> None:
        if self.costs is None:
            self.costs = array("f")
        self.costs.append(seconds)
        if len(self.costs) > COSTS_KEPT:
            del self.costs[0]


class TaskRecord:
    __slots__ = (
        "blocked",
        "bts",
        "bts_failures",
        "bytes_from_peers",
        "bytes_from_source",
        "count",
        "digests",
        "holders",
        "peers",
        "piece_length",
        "seed_pending",
        "seed_since",
        "size",
        "source",
        "state",
        "task",
    )

    def __init__(self, task: str, size: int, source: str) -> None:
        self.task = task
        self.size = size
        self.piece_length = piece_length(size)
        self.count = piece_count(size, self.piece_length)
        self.source = source
        self.state = TaskState.PENDING
        self.peers: dict[str, PeerRecord] = {}
        self.holders: list[str] = []
        """Peers with something to serve (a piece, or a running back-to-source
        download): the pool parents are sampled from, with O(1) removal by swap."""
        self.bts: list[str] = []
        """Peers going back to source now (at most the task's limit)."""
        self.seed_pending = ""
        """A seed host asked to go back to source that has not registered yet."""
        self.seed_since = 0.0
        self.digests = bytearray()
        self.blocked: set[str] = set()
        """Parents that served a corrupt piece: nobody in this task fetches from them."""
        self.bts_failures = 0
        self.bytes_from_source = 0
        self.bytes_from_peers = 0

    @property
    def digests_known(self) -> int:
        return len(self.digests) // DIGEST_BYTES

    def add_holder(self, peer: PeerRecord) -> None:
        if peer.pos < 0:
            peer.pos = len(self.holders)
            self.holders.append(peer.peer_id)

    def drop_holder(self, peer: PeerRecord) -> None:
        if peer.pos < 0:
            return
        last = self.holders.pop()
        if last != peer.peer_id:
            self.holders[peer.pos] = last
            self.peers[last].pos = peer.pos
        peer.pos = -1


# -- serialized form (the Redis store) ------------------------------------------------


def host_to_dict(h: HostRecord) -> dict[str, Any]:
    i = h.info
    return {
        "host_id": i.host_id,
        "addr": i.addr,
        "seed": i.seed,
        "rack": i.rack,
        "upload_slots": i.upload_slots,
        "last_seen": h.last_seen,
    }


def host_from_dict(d: dict[str, Any]) -> HostRecord:
    info = HostInfo(
        host_id=d["host_id"],
        addr=d["addr"],
        seed=d["seed"],
        rack=d["rack"],
        upload_slots=d["upload_slots"],
    )
    return HostRecord(info, d["last_seen"])


def _peer_to_list(p: PeerRecord) -> list[Any]:
    return [
        p.peer_id,
        p.host_id,
        p.state.value,
        format(p.bits, "x"),
        list(p.parents),
        p.children,
        sorted(p.blocked) if p.blocked else None,
        [round(c, 6) for c in p.costs] if p.costs else None,
        p.last_report,
        p.waits,
    ]


def _peer_from_list(v: list[Any]) -> PeerRecord:
    p = PeerRecord(v[0], v[1], v[8])
    p.state = PeerState(v[2])
    p.bits = int(v[3], 16)
    p.held = p.bits.bit_count()
    p.parents = tuple(v[4])
    p.children = v[5]
    p.blocked = set(v[6]) if v[6] else None
    p.costs = array("f", v[7]) if v[7] else None
    p.waits = v[9]
    return p


def task_to_dict(t: TaskRecord) -> dict[str, Any]:
    return {
        "task": t.task,
        "size": t.size,
        "source": t.source,
        "state": t.state.value,
        "peers": [_peer_to_list(p) for p in t.peers.values()],
        "holders": t.holders,
        "bts": t.bts,
        "seed_pending": t.seed_pending,
        "seed_since": t.seed_since,
        "digests": t.digests.hex(),
        "blocked": sorted(t.blocked),
        "bts_failures": t.bts_failures,
        "bytes_from_source": t.bytes_from_source,
        "bytes_from_peers": t.bytes_from_peers,
    }


def task_from_dict(d: dict[str, Any]) -> TaskRecord:
    t = TaskRecord(d["task"], d["size"], d["source"])
    t.state = TaskState(d["state"])
    for v in d["peers"]:
        p = _peer_from_list(v)
        t.peers[p.peer_id] = p
    t.holders = list(d["holders"])
    for i, pid in enumerate(t.holders):
        t.peers[pid].pos = i
    t.bts = list(d["bts"])
    t.seed_pending = d["seed_pending"]
    t.seed_since = d["seed_since"]
    t.digests = bytearray.fromhex(d["digests"])
    t.blocked = set(d["blocked"])
    t.bts_failures = d["bts_failures"]
    t.bytes_from_source = d["bytes_from_source"]
    t.bytes_from_peers = d["bytes_from_peers"]
    return t
