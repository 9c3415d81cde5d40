"""What running containers use: ``lamina stats`` (CPU, memory, pids, network and
block I/O) and ``lamina top`` (their processes), as Docker shows them.

::

    containers.py    StatsSampler (rounds of ContainerStats), top   -- records, ps
        │
    sampling.py      Sample of one container's cgroups and netns   -- reads /proc, /sys/fs/cgroup
        │
    cgroup_text.py   cgroup v1/v2 and /proc file text -> numbers    -- pure
    ps_table.py      ps output -> the container's rows             -- pure
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lamina.runtime.stats.containers import ContainerStats, StatsSampler, top
    from lamina.runtime.stats.ps_table import PsTable, filter_ps
    from lamina.runtime.stats.sampling import Sample, cgroup_pids, read_sample

__all__ = [
    "ContainerStats",
    "PsTable",
    "Sample",
    "StatsSampler",
    "cgroup_pids",
    "filter_ps",
    "read_sample",
    "top",
]

_HOME = {
    "ContainerStats": "containers",
    "StatsSampler": "containers",
    "top": "containers",
    "PsTable": "ps_table",
    "filter_ps": "ps_table",
    "Sample": "sampling",
    "cgroup_pids": "sampling",
    "read_sample": "sampling",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
