"""Where the scheduler's state lives, behind one Protocol.

An event is a plain function of a :class:`~lamina.p2p.scheduling.scheduler.Scheduler`
that holds (at least) the hosts and the one task the event touches; a store runs it
with nothing else touching that task meanwhile. The memory store has one Scheduler
(events are synchronous, so the event loop already runs them one at a time); the Redis
store loads, applies and saves under a per-task lock (:mod:`.redis_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from lamina.p2p.api import Clock, HostInfo
from lamina.p2p.scheduling.scheduler import Scheduler

R = TypeVar("R")


class StateStore(Protocol):
    async def apply(self, task: str, event: Callable[[Scheduler], R]) -> R:
        """Run ``event`` on a scheduler holding ``task`` (if it exists) and the hosts;
        what it changes is kept before the next event on ``task`` runs."""
        ...

    async def announce_host(self, host: HostInfo) -> None: ...

    async def expire_hosts(self) -> list[str]:
        """Drop hosts silent for ``HOST_TTL``, with their peers; their ids."""
        ...

    async def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Everything in this process: lost when it stops (peers register again)."""

    def __init__(self, clock: Clock, swarm_key: bytes, back_to_source_limit: int) -> None:
        self.scheduler = Scheduler(clock, swarm_key, back_to_source_limit=back_to_source_limit)

    async def apply(self, task: str, event: Callable[[Scheduler], R]) -> R:
        return event(self.scheduler)

    async def announce_host(self, host: HostInfo) -> None:
        self.scheduler.announce_host(host)

    async def expire_hosts(self) -> list[str]:
        return self.scheduler.expire_hosts()

    async def status(self) -> dict[str, Any]:
        return self.scheduler.status()

    async def close(self) -> None:
        return None
