"""The contract between the rooms of :mod:`lamina.p2p`.

Words:

- A **task** is one blob, its id the blob's digest (``sha256:<hex>``).
- A **host** is one peer process (a registry-mirror proxy with a piece server at
  ``addr``); a **peer** is one host's download of one task (``peer_id`` is unique per
  host and task: ``<host_id>/<task>`` is the convention).
- A **parent** of a peer is another peer it fetches pieces from.
- A **back-to-source** peer fetches the blob from the upstream registry itself; it
  computes every piece's sha256 while doing so and reports them, and those digests are
  the only ones any peer checks pieces against. At most ``back_to_source_limit`` (1-3)
  peers of a task go back to source at once; a *seed* host (``seed=True``) is asked
  first, so a swarm's first requester does not have to.

Lifecycle of a peer (:class:`PeerState`): ``pending`` (registered, nothing scheduled)
-> ``running`` (fetching from parents) or ``back_to_source`` -> ``succeeded`` (every
piece held and the blob's digest checked) or ``failed``; any state -> ``left``. A task
(:class:`TaskState`) is ``pending`` until a peer runs, ``running``, then ``succeeded``
once any peer has the whole verified blob, ``failed`` when every back-to-source attempt
failed; a new registration restarts a failed or left task.

The scheduler changes state only by events applied one at a time (with an injected
:class:`Clock`); every event a peer sends is answered with its current
:class:`Schedule`. The wire form of these values is :mod:`lamina.p2p.wire`
(``docs/p2p.md``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol


class PeerState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    BACK_TO_SOURCE = "back_to_source"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEFT = "left"


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEFT = "left"


@dataclass(frozen=True)
class HostInfo:
    """One peer process, as it announces itself to the scheduler (and re-announces
    every ``HOST_HEARTBEAT`` seconds; a host silent for ``HOST_TTL`` is gone)."""

    host_id: str
    addr: str
    """Base URL of its piece server, e.g. ``http://10.0.0.5:4001``."""
    seed: bool = False
    rack: str = ""
    """Affinity label (``idc|rack|...``): parents sharing more leading labels score higher."""
    upload_slots: int = 32
    """How many pieces it will upload at once."""


HOST_HEARTBEAT = 5.0
HOST_TTL = 20.0


@dataclass(frozen=True)
class Parent:
    peer_id: str
    host_id: str
    addr: str


Action = Literal["parents", "back_to_source", "wait", "done"]
"""What the scheduler tells a peer: fetch from ``parents``; go ``back_to_source``;
``wait`` (poll again after ``retry_ms``: nobody has pieces yet and the back-to-source
cap is reached); ``done`` (the peer has succeeded, failed or left)."""


@dataclass(frozen=True)
class Schedule:
    action: Action
    size: int
    piece_length: int
    parents: tuple[Parent, ...] = ()
    digests_from: int = 0
    """Index of the first piece ``digests`` covers (the peer says how many it knows)."""
    digests: tuple[str, ...] = ()
    """sha256 hex of pieces ``digests_from ...``, as the back-to-source peer computed
    them from the source; a piece whose digest is not known yet must not be fetched."""
    token: str = ""
    """Swarm token for this task (:mod:`lamina.p2p.tokens`), shown to parents."""
    retry_ms: int = 500
    """When to report or poll again at the latest."""
    reason: str = ""


PieceFailureReason = Literal["corrupt", "error", "timeout", "refused"]


@dataclass(frozen=True)
class PieceFailure:
    piece: int
    parent_id: str
    reason: PieceFailureReason


@dataclass(frozen=True)
class Report:
    """What a peer tells the scheduler since its last report (sent at least every
    ``retry_ms``, batched: never one message per piece)."""

    peer_id: str
    done: tuple[int, ...] = ()
    """Pieces it now holds, verified."""
    digests_known: int = 0
    """How many piece digests it already has (the reply sends the rest)."""
    source_digests_from: int = 0
    source_digests: tuple[str, ...] = ()
    """Only from a back-to-source peer: sha256 hex of pieces ``source_digests_from ...``."""
    failed: tuple[PieceFailure, ...] = ()
    bytes_from_source: int = 0
    bytes_from_peers: int = 0
    """Counters since the last report (the scheduler sums them for ``status``)."""


FinishOutcome = Literal["succeeded", "failed", "back_to_source_failed"]


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...


class SchedulerClient(Protocol):
    """What a peer asks of the scheduler (over HTTP: :mod:`lamina.p2p.client`)."""

    async def announce_host(self, host: HostInfo) -> None: ...

    async def register(
        self, task: str, peer_id: str, host: HostInfo, size: int, source: str
    ) -> Schedule:
        """``source`` is the upstream blob URL without credentials (a seed host may be
        asked to fetch it)."""
        ...

    async def report(self, task: str, report: Report) -> Schedule: ...

    async def finish(
        self, task: str, peer_id: str, outcome: FinishOutcome, reason: str = ""
    ) -> None: ...

    async def leave(self, task: str, peer_id: str) -> None: ...

    async def status(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class PeerView:
    """What the parent-selection policy sees of one candidate (or of the child)."""

    peer_id: str
    host: HostInfo
    state: PeerState
    pieces_held: int
    piece_total: int
    uploads_active: int
    upload_ok: int
    upload_failed: int
    piece_costs: tuple[float, ...] = ()
    """Seconds its recent piece downloads took (the bad-node test uses them)."""


class ParentPolicy(Protocol):
    """Chooses a child's parents among candidates the scheduler has already filtered
    (same host, blocklist, left or failed peers removed). Swappable: the scheduler
    simulator compares policies."""

    def choose(
        self, child: PeerView, candidates: Sequence[PeerView], limit: int
    ) -> list[PeerView]: ...


@dataclass(frozen=True)
class BlobRequest:
    """What the mirror front asks of the engine for one client GET."""

    task: str
    size: int
    source: str
    """Upstream blob URL, used only if this peer goes back to source."""
    source_headers: Mapping[str, str] = field(default_factory=dict)
    """The client's own credentials for the upstream: used for this peer's own
    back-to-source fetch only, never sent to the scheduler or another peer."""
    start: int = 0
    end: int | None = None
    """Byte range ``[start, end)``; ``None`` means to the end."""


class BlobSource(Protocol):
    """Streams a blob's bytes in order, however they are obtained (cache, parents,
    source). Every byte yielded was verified against the source's piece digests; the
    whole blob's digest is checked before it is kept in the cache."""

    def open(self, request: BlobRequest) -> AsyncIterator[bytes]: ...
