"""Peer and task state machines (``api.PeerState``, ``api.TaskState``).

The tables follow Dragonfly's ``peer.go``/``task.go`` (research notes §1.2), without the
size-scope states: a peer goes ``pending`` -> ``running`` | ``back_to_source`` ->
``succeeded`` | ``failed``, and may leave from anywhere. A running peer may be sent
back to source (its parents are gone and a slot is free). A task restarts from
``failed``, ``left`` or (when nobody holds a piece any more) ``succeeded``.
"""

from __future__ import annotations

from lamina.errors import Conflict
from lamina.p2p.api import PeerState, TaskState

P = PeerState
T = TaskState

PEER_MOVES: dict[PeerState, frozenset[PeerState]] = {
    P.PENDING: frozenset({P.RUNNING, P.BACK_TO_SOURCE, P.FAILED, P.LEFT}),
    P.RUNNING: frozenset({P.BACK_TO_SOURCE, P.SUCCEEDED, P.FAILED, P.LEFT}),
    P.BACK_TO_SOURCE: frozenset({P.SUCCEEDED, P.FAILED, P.LEFT}),
    P.SUCCEEDED: frozenset({P.LEFT}),
    P.FAILED: frozenset({P.LEFT}),
    P.LEFT: frozenset(),
}

TASK_MOVES: dict[TaskState, frozenset[TaskState]] = {
    T.PENDING: frozenset({T.RUNNING, T.FAILED, T.LEFT}),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.LEFT}),
    T.SUCCEEDED: frozenset({T.RUNNING, T.LEFT}),
    T.FAILED: frozenset({T.PENDING, T.LEFT}),
    T.LEFT: frozenset({T.PENDING}),
}


class IllegalTransition(Conflict):
    """A state change the machine does not allow (a peer's bug or a stale message)."""


def peer_move(current: PeerState, new: PeerState, who: str = "peer") -> PeerState:
    if new not in PEER_MOVES[current]:
        raise IllegalTransition(
            f"{who} cannot go from {current.value} to {new.value}",
            hint="register the peer again to start a new download",
        )
    return new


def task_move(current: TaskState, new: TaskState, who: str = "task") -> TaskState:
    if new not in TASK_MOVES[current]:
        raise IllegalTransition(f"{who} cannot go from {current.value} to {new.value}")
    return new


PEER_ACTIVE = frozenset({P.PENDING, P.RUNNING, P.BACK_TO_SOURCE})
"""States of a peer that is still downloading."""
