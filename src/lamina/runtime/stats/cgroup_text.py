"""The text of cgroup and /proc files, parsed: text in, numbers out (no I/O).

Each function takes the content of one kernel file and returns what ``lamina stats``
and ``lamina top`` need from it. The files and their formats:

- ``/proc/<pid>/cgroup``: ``hierarchy-id:controllers:path`` per line (``0::path`` is
  the cgroup v2 one); ``/proc/<pid>/mountinfo`` tells where each hierarchy is
  mounted (proc(5)).
- cgroup v1 (the kernel's admin-guide ``cgroup-v1/``): ``cpuacct.usage`` (ns),
  ``memory.usage_in_bytes``, ``memory.limit_in_bytes``, ``memory.stat``
  (``total_inactive_file``), ``pids.current``,
  ``blkio.throttle.io_service_bytes_recursive`` (``MAJ:MIN Read|Write N``).
- cgroup v2 (``cgroup-v2.rst``): ``cpu.stat`` (``usage_usec``), ``memory.current``,
  ``memory.max`` (``max``: none), ``memory.stat`` (``inactive_file``),
  ``pids.current``, ``io.stat`` (``MAJ:MIN rbytes=N wbytes=N ...``).
- ``/proc/<pid>/net/dev`` (the counters of the process's network namespace),
  ``/proc/<pid>/io`` (``read_bytes``/``write_bytes`` of a process), ``/proc/meminfo``.

Malformed lines are skipped rather than fatal: the kernel adds fields over the years,
and a monitoring command should show what it can.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CgroupMount",
    "ProcCgroup",
    "cgroup_dirs",
    "cpu_percent",
    "cpu_usage_v1",
    "cpu_usage_v2",
    "flat_keyed",
    "io_bytes_v1",
    "io_bytes_v2",
    "mem_total",
    "memory_limit_v1",
    "memory_limit_v2",
    "memory_usage",
    "net_bytes",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "proc_io_bytes",
    "single_int",
]

# memory.limit_in_bytes of an unlimited v1 cgroup is PAGE_COUNTER_MAX pages, rounded to
# the page size (9223372036854771712 with 4 KiB pages): anything this big is "none".
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class ProcCgroup:
    """One line of ``/proc/<pid>/cgroup``: ``controllers`` is empty for v2 (``0::``)."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """A mounted cgroup hierarchy: ``version`` 1 or 2, the v1 ``controllers`` it
    carries, the cgroup it shows at ``mountpoint`` (``root``, ``/`` unless a bind
    mount or a cgroup namespace shows less)."""

    version: int
    controllers: tuple[str, ...]
    root: str
    mountpoint: str


def parse_proc_cgroup(text: str) -> list[ProcCgroup]:
    out = []
    for line in text.splitlines():
        number, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2 and number.isdigit() and path.startswith("/")):
            continue
        names = tuple(c for c in controllers.split(",") if c)
        out.append(ProcCgroup(int(number), names, path))
    return out


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup (v1) and cgroup2 mounts of a mountinfo, in its order."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        if dash < 5 or len(fields) < dash + 4:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            out.append(CgroupMount(2, (), root, mountpoint))
        elif fstype == "cgroup":
            # the super options name the controllers (and rw, xattr, name=...)
            known = tuple(o for o in options if o not in ("rw", "ro", "xattr", "noprefix"))
            out.append(CgroupMount(1, known, root, mountpoint))
    return out


def cgroup_dirs(
    cgroups: list[ProcCgroup], mounts: list[CgroupMount], controller: str
) -> list[tuple[int, str]]:
    """Where a process's cgroup of a v1 ``controller`` may be, best first, as
    ``(version, directory)``: its v1 hierarchy of that controller, then its v2 cgroup
    (on a hybrid host both exist, and only the v1 one carries the controller's files,
    so the caller takes the first candidate that has the file it wants).

    A process at the root of a hierarchy (``/``) is in no cgroup of its own: that is
    the host's (crun leaves ``0::/`` on a hybrid host), never the container's.
    """
    out = []
    for line in cgroups:
        if line.path == "/":
            continue
        if line.hierarchy != 0 and controller not in line.controllers:
            continue
        version = 2 if line.hierarchy == 0 and not line.controllers else 1
        for mount in mounts:
            if mount.version != version or (version == 1 and controller not in mount.controllers):
                continue
            root = mount.root.rstrip("/")
            if root and not (line.path == root or line.path.startswith(root + "/")):
                continue  # this mount shows another part of the hierarchy
            out.append((version, mount.mountpoint.rstrip("/") + line.path[len(root) :]))
            break
    out.sort(key=lambda candidate: candidate[0])
    return out


def single_int(text: str) -> int | None:
    """A file holding one number (``pids.current``, ``memory.current``...)."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``memory.stat``, ``cpu.stat``, ``/proc/<pid>/io`` with its
    colons): the ones whose value is a number."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        key = key.rstrip(":")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out


def cpu_usage_v1(cpuacct_usage: str) -> int | None:
    """Nanoseconds of CPU the cgroup used (``cpuacct.usage``)."""
    return single_int(cpuacct_usage)


def cpu_usage_v2(cpu_stat: str) -> int | None:
    """Nanoseconds of CPU the cgroup used (``cpu.stat``'s ``usage_usec``)."""
    usec = flat_keyed(cpu_stat).get("usage_usec")
    return None if usec is None else usec * 1000


def cpu_percent(cpu_ns_before: int, cpu_ns_after: int, wall_ns: int) -> float:
    """CPU use between two samples as Docker shows it: 100 % per busy core.

    Docker divides the cgroup's CPU time by the host's (all cores, from /proc/stat) and
    multiplies by the number of cores; that is the CPU time over the wall time between
    the samples, which is what this measures with the monotonic clock.
    """
    if wall_ns <= 0 or cpu_ns_after < cpu_ns_before:
        return 0.0
    return (cpu_ns_after - cpu_ns_before) / wall_ns * 100.0


def memory_usage(usage: int, memory_stat: str, *, version: int) -> int:
    """Memory in use without the page cache the kernel can drop at once, as Docker's
    CLI counts it: v1 ``usage_in_bytes - total_inactive_file``, v2 ``memory.current -
    inactive_file`` (left as is when the stat is missing or bigger)."""
    key = "total_inactive_file" if version == 1 else "inactive_file"
    inactive = flat_keyed(memory_stat).get(key)
    if inactive is None or inactive >= usage:
        return usage
    return usage - inactive


def memory_limit_v1(limit_in_bytes: str) -> int | None:
    """``memory.limit_in_bytes``; None for no limit."""
    value = single_int(limit_in_bytes)
    return None if value is None or value >= _V1_UNLIMITED else value


def memory_limit_v2(memory_max: str) -> int | None:
    """``memory.max``; None for ``max`` (no limit)."""
    return single_int(memory_max)


def io_bytes_v1(io_service_bytes: str) -> tuple[int, int] | None:
    """(read, write) bytes of ``blkio.throttle.io_service_bytes_recursive``, summed
    over its devices; None when it has no device line (the kernel counted nothing,
    e.g. no request of the cgroup reached a block device)."""
    read = write = 0
    devices = False
    for line in io_service_bytes.splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue  # the closing "Total N", or a blank line
        devices = True
        try:
            value = int(fields[2])
        except ValueError:
            continue
        if fields[1] == "Read":
            read += value
        elif fields[1] == "Write":
            write += value
    return (read, write) if devices else None


def io_bytes_v2(io_stat: str) -> tuple[int, int] | None:
    """(read, write) bytes of ``io.stat`` (``rbytes``/``wbytes``) over its devices;
    None when it has no device line."""
    read = write = 0
    devices = False
    for line in io_stat.splitlines():
        fields = line.split()
        if not fields or ":" not in fields[0]:
            continue
        devices = True
        for item in fields[1:]:
            key, _, value = item.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                if key == "rbytes":
                    read += int(value)
                else:
                    write += int(value)
    return (read, write) if devices else None


def proc_io_bytes(proc_io: str) -> tuple[int, int]:
    """(read_bytes, write_bytes) of ``/proc/<pid>/io``: what the process (and the
    children it reaped) made the storage layer read and write."""
    fields = flat_keyed(proc_io)
    return fields.get("read_bytes", 0), fields.get("write_bytes", 0)


def net_bytes(net_dev: str) -> tuple[int, int]:
    """(received, sent) bytes of ``/proc/<pid>/net/dev`` over every interface but the
    loopback (Docker counts the container's own interfaces only)."""
    rx = tx = 0
    for line in net_dev.splitlines():
        name, sep, counters = line.partition(":")
        if not sep or "|" in line or name.strip() == "lo":
            continue
        fields = counters.split()
        # receive: bytes packets errs drop fifo frame compressed multicast; then transmit
        if len(fields) < 9 or not (fields[0].isdigit() and fields[8].isdigit()):
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def mem_total(meminfo: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo``, in bytes (Docker's limit of an unlimited
    container)."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None
