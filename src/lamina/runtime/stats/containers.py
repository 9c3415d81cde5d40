"""``lamina stats`` and ``lamina top`` over container records.

:class:`StatsSampler` keeps each container's previous :class:`Sample`, so that every
round it is asked for gives CPU use over the time since the round before (Docker's
CPU % needs two readings; the first round of ``--no-stream`` takes its own, half a
second apart). :func:`top` runs the host's ``ps`` and keeps the rows of the
container's processes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lamina.errors import Conflict, NotFound, ToolError
from lamina.runtime.lifecycle import init_pid, refresh
from lamina.runtime.records.containers import Container, ContainerStore
from lamina.runtime.stats.cgroup_text import cpu_percent
from lamina.runtime.stats.ps_table import PsTable, filter_ps
from lamina.runtime.stats.sampling import Sample, cgroup_pids, host_memory, read_sample

__all__ = ["ContainerStats", "StatsSampler", "top"]

PRE_READ = 0.5  # seconds between the two readings of a first round (Docker's pre-read)


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """One container's figures of one round (zeros for a container that does not run)."""

    id: str
    name: str
    cpu_percent: float
    mem_usage_bytes: int
    mem_limit_bytes: int
    mem_percent: float
    pids: int
    net_rx_bytes: int
    net_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    running: bool = True

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["running"]
        return doc


def _figures(
    c: Container, before: Sample | None, now: Sample | None, memory: int
) -> ContainerStats:
    if now is None:
        return ContainerStats(c.id, c.name, 0.0, 0, 0, 0.0, 0, 0, 0, 0, 0, running=False)
    cpu = 0.0
    if before is not None and before.cpu_ns is not None and now.cpu_ns is not None:
        cpu = cpu_percent(before.cpu_ns, now.cpu_ns, now.taken_ns - before.taken_ns)
    # an unlimited cgroup (or one above the host's memory) is shown with the host's
    limit = min(x for x in (now.mem_limit, memory) if x) if (now.mem_limit or memory) else 0
    return ContainerStats(
        id=c.id,
        name=c.name,
        cpu_percent=round(cpu, 2),
        mem_usage_bytes=now.mem_usage,
        mem_limit_bytes=limit,
        mem_percent=round(now.mem_usage / limit * 100.0, 2) if limit else 0.0,
        pids=now.pids,
        net_rx_bytes=now.net_rx,
        net_tx_bytes=now.net_tx,
        block_read_bytes=now.block_read,
        block_write_bytes=now.block_write,
    )


class StatsSampler:
    """Rounds of figures for containers of one store."""

    def __init__(self, store: ContainerStore) -> None:
        self._store = store
        self._before: dict[str, Sample] = {}
        self._memory = host_memory() or 0

    def _sample(self, c: Container) -> Sample | None:
        pid = init_pid(self._store, c) if c.status == "running" else 0
        return read_sample(pid) if pid else None

    def round(self, containers: Sequence[Container]) -> list[ContainerStats]:
        """The figures of ``containers`` now; CPU % over the time since the previous
        round (the first round of a container reads it twice, PRE_READ apart)."""
        now = {c.id: self._sample(c) for c in containers}
        fresh = [c.id for c in containers if now[c.id] is not None and c.id not in self._before]
        if fresh:
            time.sleep(PRE_READ)
            for cid in fresh:
                self._before[cid] = now[cid]  # type: ignore[assignment]
            now.update({c.id: self._sample(c) for c in containers if c.id in fresh})
        out = []
        for c in containers:
            sample = now[c.id]
            out.append(_figures(c, self._before.get(c.id), sample, self._memory))
            if sample is None:
                self._before.pop(c.id, None)
            else:
                self._before[c.id] = sample
        return out


def _running_pid(store: ContainerStore, c: Container) -> int:
    c = refresh(store, c)
    pid = init_pid(store, c) if c.status == "running" else 0
    if not pid:
        raise Conflict(
            f"container {c.name} is not running",
            hint="see `lamina ps -a` and `lamina logs`; run a new one with `lamina run`",
        )
    return pid


def top(store: ContainerStore, c: Container, ps_args: Sequence[str] = ("-ef",)) -> PsTable:
    """``docker top``: the host's ``ps ps_args``, cut to the container's processes."""
    pid = _running_pid(store, c)
    pids = cgroup_pids(pid) or [pid]
    try:
        proc = subprocess.run(
            ["ps", *(ps_args or ("-ef",))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            # ps cuts lines to $COLUMNS when it is set (as under a pager or pytest);
            # without it and without a terminal it prints whole command lines.
            env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
        )
    except FileNotFoundError:
        raise NotFound("ps is not installed", hint="install procps") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"cannot run ps: {exc}") from exc
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()
        raise ToolError(
            f"ps {' '.join(ps_args)} failed: {message[0] if message else proc.returncode}",
            hint="give options of the host's ps, e.g. -ef or aux",
        )
    return filter_ps(proc.stdout, pids)
