"""Samples of a container's cgroups, read from the files of the running kernel.

The container is named by the host pid of its first process. Its cgroups are found
from ``/proc/<pid>/cgroup`` and this process's mountinfo, so they are read wherever
the OCI runtime put them (runc and crun choose different paths, the spec's
``cgroupsPath`` others again) and on cgroup v1, v2 or a hybrid of both: each figure
comes from the first of the process's cgroups that has its file
(:func:`~lamina.runtime.stats.cgroup_text.cgroup_dirs`). The parsing is
:mod:`~lamina.runtime.stats.cgroup_text`'s; this module only reads.

Block I/O: where the kernel's block cgroup counts nothing (on this project's build
host v1 ``blkio`` shows ``Total 0`` for every cgroup, even after direct writes), the
figure is the sum of ``/proc/<pid>/io`` over the cgroup's processes: the bytes each
made the storage layer read and write, its reaped children's included.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lamina.runtime.stats import cgroup_text as text

__all__ = ["Sample", "cgroup_pids", "read_sample"]

_MAX_FILE = 1 << 20


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a container's counters. ``taken_ns`` is the monotonic clock;
    ``cpu_ns`` the CPU time its cgroup used so far (None: not readable);
    ``mem_limit`` None when the cgroup has no limit."""

    taken_ns: int
    cpu_ns: int | None
    mem_usage: int
    mem_limit: int | None
    pids: int
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(_MAX_FILE)
    except OSError:
        return None


class _Cgroups:
    """The cgroup directories of one process, per v1 controller name."""

    def __init__(self, pid: int) -> None:
        own = _read(f"/proc/{pid}/cgroup")
        self.alive = own is not None
        self._lines = text.parse_proc_cgroup(own or "")
        self._mounts = text.parse_mountinfo(_read("/proc/self/mountinfo") or "")

    def read(self, controller: str, v1_file: str, v2_file: str) -> tuple[int, str, str] | None:
        """(version, directory, text) of the first cgroup of ``controller`` that has
        its file (``v1_file`` in a v1 hierarchy, ``v2_file`` in the v2 one)."""
        for version, directory in text.cgroup_dirs(self._lines, self._mounts, controller):
            content = _read(os.path.join(directory, v1_file if version == 1 else v2_file))
            if content is not None:
                return version, directory, content
        return None

    def procs(self) -> list[int]:
        """The processes in the container's cgroup and the cgroups below it: those
        of its pids (else memory, else any) hierarchy."""
        for controller in ("pids", "memory", "cpuacct"):
            for _version, directory in text.cgroup_dirs(self._lines, self._mounts, controller):
                if os.path.isfile(os.path.join(directory, "cgroup.procs")):
                    return _procs_below(directory)
        return []


def _procs_below(directory: str) -> list[int]:
    pids: set[int] = set()
    for here, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            content = _read(os.path.join(here, "cgroup.procs")) or ""
            pids.update(int(p) for p in content.split() if p.isdigit())
    return sorted(pids)


def cgroup_pids(pid: int) -> list[int]:
    """The host pids of every process in the cgroup of process ``pid`` (empty when it
    is gone, or in no cgroup of its own)."""
    return _Cgroups(pid).procs()


def _memory(groups: _Cgroups) -> tuple[int, int | None]:
    found = groups.read("memory", "memory.usage_in_bytes", "memory.current")
    if found is None:
        return 0, None
    version, directory, usage_text = found
    usage = text.single_int(usage_text) or 0
    stat = _read(os.path.join(directory, "memory.stat")) or ""
    limit_text = _read(
        os.path.join(directory, "memory.limit_in_bytes" if version == 1 else "memory.max")
    )
    limit = None
    if limit_text is not None:
        limit = (
            text.memory_limit_v1(limit_text) if version == 1 else text.memory_limit_v2(limit_text)
        )
    return text.memory_usage(usage, stat, version=version), limit


def _block_io(groups: _Cgroups) -> tuple[int, int]:
    found = groups.read("blkio", "blkio.throttle.io_service_bytes_recursive", "io.stat")
    if found is not None:
        version, _directory, content = found
        counted = text.io_bytes_v1(content) if version == 1 else text.io_bytes_v2(content)
        if counted is not None:
            return counted
    read = write = 0
    for pid in groups.procs():
        r, w = text.proc_io_bytes(_read(f"/proc/{pid}/io") or "")
        read, write = read + r, write + w
    return read, write


def read_sample(pid: int) -> Sample | None:
    """The counters of the container whose first process is ``pid``; None once that
    process is gone."""
    groups = _Cgroups(pid)
    if not groups.alive:
        return None
    taken = time.monotonic_ns()
    cpu = groups.read("cpuacct", "cpuacct.usage", "cpu.stat")
    cpu_ns = None
    if cpu is not None:
        cpu_ns = text.cpu_usage_v1(cpu[2]) if cpu[0] == 1 else text.cpu_usage_v2(cpu[2])
    mem_usage, mem_limit = _memory(groups)
    pids = groups.read("pids", "pids.current", "pids.current")
    net = _read(f"/proc/{pid}/net/dev")
    if net is None:
        return None  # it ended while we read
    rx, tx = text.net_bytes(net)
    block_read, block_write = _block_io(groups)
    return Sample(
        taken_ns=taken,
        cpu_ns=cpu_ns,
        mem_usage=mem_usage,
        mem_limit=mem_limit,
        pids=(text.single_int(pids[2]) or 0) if pids is not None else len(groups.procs()),
        net_rx=rx,
        net_tx=tx,
        block_read=block_read,
        block_write=block_write,
    )


def host_memory() -> int | None:
    """The host's memory (``MemTotal``): the limit Docker shows for unlimited ones."""
    return text.mem_total(_read("/proc/meminfo") or "")
