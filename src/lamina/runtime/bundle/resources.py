"""Resource limits of ``lamina run`` (pure: option text in, runtime-spec pieces out).

``--memory``, ``--memory-swap``, ``--pids-limit``, ``--cpus``, ``--cpu-shares`` become
the runtime-spec's ``linux.resources`` (config-linux.md "Control groups"), written in
the spec's own terms (bytes, CFS quota/period, shares): runc and crun map them to cgroup
v1 files (``memory.limit_in_bytes``, ``pids.max``...) or to v2 ones (``memory.max``,
``cpu.weight``...), so nothing here depends on the host's cgroup layout. ``--ulimit``
becomes ``process.rlimits``, ``--shm-size`` the size of the ``/dev/shm`` tmpfs and
``--tmpfs`` extra tmpfs mounts. Value rules follow ``docker run`` (sizes in binary
units, the 6 MiB memory floor, swap counting memory plus swap).
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from lamina.errors import InvalidArgument

DEFAULT_PIDS_LIMIT = 2048  # Podman's default (containers.conf pids_limit)
MIN_MEMORY = 6 * 1024 * 1024  # docker run refuses less: the runtime itself needs some
CPU_PERIOD = 100_000  # µs, the kernel's default CFS period (what Docker uses for --cpus)
RLIM_INFINITY = 2**64 - 1  # how the runtime-spec writes "unlimited" (uint64)

_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# setrlimit(2) resources by their `ulimit` names, as docker run takes them
ULIMITS = (
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
)
# tmpfs options a user may give (mount(8) tmpfs section and the generic flags)
_TMPFS_FLAGS = frozenset(
    [
        "ro",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "atime",
        "noatime",
        "relatime",
        "strictatime",
        "nodiratime",
        "diratime",
        "sync",
        "async",
        "dirsync",
    ]
)
_TMPFS_VALUES = frozenset(("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge"))
_TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")  # docker's, before the user's options


def parse_size(text: str, what: str) -> int:
    """``64m``, ``1g``, ``512k``, ``64MiB``, ``100`` (bytes) -> bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise InvalidArgument(
            f"invalid {what} {text!r}", hint="give a size like 64m, 512k or 1g (bytes if no unit)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True, slots=True)
class Ulimit:
    """One ``--ulimit NAME=SOFT[:HARD]`` (RLIM_INFINITY for ``unlimited`` or -1)."""

    name: str
    soft: int
    hard: int

    @classmethod
    def parse(cls, text: str) -> Ulimit:
        name, eq, values = text.partition("=")
        hint = "use --ulimit NAME=SOFT[:HARD], e.g. nofile=1024:4096"
        if not eq or not values:
            raise InvalidArgument(f"--ulimit {text!r} is not NAME=SOFT[:HARD]", hint=hint)
        if name not in ULIMITS:
            raise InvalidArgument(
                f"--ulimit {text!r}: unknown limit {name!r}", hint=f"one of {', '.join(ULIMITS)}"
            )
        soft_text, _, hard_text = values.partition(":")
        soft = _limit_value(soft_text, text, hint)
        hard = _limit_value(hard_text, text, hint) if hard_text else soft
        if soft > hard:
            raise InvalidArgument(
                f"--ulimit {text!r}: the soft limit is above the hard limit", hint=hint
            )
        return cls(name, soft, hard)

    def rlimit(self) -> dict[str, Any]:
        return {"type": f"RLIMIT_{self.name.upper()}", "soft": self.soft, "hard": self.hard}


def _limit_value(text: str, whole: str, hint: str) -> int:
    if text in ("unlimited", "-1"):
        return RLIM_INFINITY
    if not text.isdigit():
        raise InvalidArgument(f"--ulimit {whole!r}: {text!r} is not a number", hint=hint)
    return int(text)


@dataclass(frozen=True, slots=True)
class Tmpfs:
    """One ``--tmpfs PATH[:OPTS]``: an empty tmpfs at ``path`` with mount options."""

    path: str
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Tmpfs:
        path, _, opts = text.partition(":")
        if not path.startswith("/") or "\0" in text or ".." in path.split("/"):
            raise InvalidArgument(
                f"--tmpfs {text!r}: the path must be absolute",
                hint="use --tmpfs /path[:size=64m,mode=1777]",
            )
        path = posixpath.normpath(path)
        if path == "/":
            raise InvalidArgument("--tmpfs cannot be mounted over the container's root '/'")
        options = tuple(o for o in opts.split(",") if o) if opts else ()
        for opt in options:
            key, eq, value = opt.partition("=")
            if (eq and (key not in _TMPFS_VALUES or not value)) or (
                not eq and opt not in _TMPFS_FLAGS
            ):
                raise InvalidArgument(
                    f"--tmpfs {text!r}: unknown option {opt!r}",
                    hint="e.g. size=64m, mode=1777, uid=0, exec, ro",
                )
            if key == "size":
                parse_size(value, "tmpfs size")
        return cls(path, options)

    def mount(self) -> dict[str, Any]:
        """The runtime-spec mount; the user's options win over docker's defaults."""
        given = set(self.options)
        defaults = [d for d in _TMPFS_DEFAULTS if d[2:] not in given]
        options = [*defaults, *(_tmpfs_option(o) for o in self.options)]
        return {"destination": self.path, "type": "tmpfs", "source": "tmpfs", "options": options}


def _tmpfs_option(opt: str) -> str:
    key, _, value = opt.partition("=")
    if key == "size":  # the kernel takes k/m/g but not docker's "mb"/"MiB"
        return f"size={parse_size(value, 'tmpfs size')}"
    return opt


@dataclass(frozen=True, slots=True)
class Resources:
    """The limits of one run; the defaults are the default spec's (only the pids limit).

    ``memory``/``memory_swap``/``shm_size`` in bytes (``memory_swap`` is memory plus
    swap, -1 for unlimited swap, as docker run); ``pids_limit`` -1 for none; ``cpus``
    a number of CPUs (CFS quota); ``cpu_shares`` the relative weight (1024 = normal).
    """

    memory: int | None = None
    memory_swap: int | None = None
    pids_limit: int = DEFAULT_PIDS_LIMIT
    cpus: float | None = None
    cpu_shares: int | None = None
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int | None = None
    tmpfs: tuple[Tmpfs, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ulimits", tuple(self.ulimits))
        object.__setattr__(self, "tmpfs", tuple(self.tmpfs))
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise InvalidArgument(
                f"--memory {self.memory} bytes is below the minimum of 6 MiB",
                hint="give at least --memory 6m",
            )
        if self.memory_swap is not None:
            if self.memory is None:
                raise InvalidArgument(
                    "--memory-swap needs --memory", hint="set --memory as well, e.g. --memory 64m"
                )
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise InvalidArgument(
                    "--memory-swap is smaller than --memory",
                    hint="--memory-swap counts memory plus swap: give at least --memory, "
                    "or -1 for unlimited swap",
                )
        if self.pids_limit == 0 or self.pids_limit < -1:
            raise InvalidArgument(
                f"invalid --pids-limit {self.pids_limit}", hint="give a positive number, or -1"
            )
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise InvalidArgument(f"invalid --cpus {self.cpus}", hint="e.g. --cpus 0.5 or 2")
        if self.cpu_shares is not None and not 2 <= self.cpu_shares <= 262144:
            raise InvalidArgument(
                f"invalid --cpu-shares {self.cpu_shares}",
                hint="between 2 and 262144 (1024 = normal)",
            )
        if self.shm_size is not None and self.shm_size <= 0:
            raise InvalidArgument("--shm-size must be above 0", hint="e.g. --shm-size 64m")
        names = [u.name for u in self.ulimits]
        if len(set(names)) != len(names):
            raise InvalidArgument("the same --ulimit is given twice")
        paths = [t.path for t in self.tmpfs]
        if len(set(paths)) != len(paths):
            raise InvalidArgument("the same --tmpfs path is given twice")

    def linux_resources(self, swap_accounting: bool = False) -> dict[str, Any]:
        """The cgroup part of ``linux.resources`` (the caller adds its device rules).

        ``--memory`` without ``--memory-swap`` allows as much swap again (memory plus
        swap = twice the memory), as Docker does, where the kernel accounts swap
        (``swap_accounting``); elsewhere runc could not write the swap limit at all.
        """
        out: dict[str, Any] = {}
        if self.memory is not None:
            memory: dict[str, Any] = {"limit": self.memory}
            if self.memory_swap is not None:
                memory["swap"] = self.memory_swap
            elif swap_accounting:
                memory["swap"] = 2 * self.memory
            out["memory"] = memory
        if self.pids_limit > 0:
            out["pids"] = {"limit": self.pids_limit}
        cpu: dict[str, Any] = {}
        if self.cpu_shares is not None:
            cpu["shares"] = self.cpu_shares
        if self.cpus is not None:
            cpu["quota"] = round(self.cpus * CPU_PERIOD)
            cpu["period"] = CPU_PERIOD
        if cpu:
            out["cpu"] = cpu
        return out

    def rlimits(self, nofile: int) -> list[dict[str, Any]]:
        """``process.rlimits``: the default RLIMIT_NOFILE unless ``--ulimit nofile``."""
        out = [u.rlimit() for u in self.ulimits]
        if not any(u.name == "nofile" for u in self.ulimits):
            out.insert(0, {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile})
        return out

    def shm_option(self) -> str | None:
        return None if self.shm_size is None else f"size={self.shm_size}"


def swap_accounting(cgroup_root: str = "/sys/fs/cgroup") -> bool:
    """Whether this kernel limits swap per cgroup: v1's ``memory.memsw.*`` files (absent
    when booted with swapaccount=0 or without CONFIG_MEMCG_SWAP), or v2's
    ``memory.swap.max``, which only non-root cgroups have."""
    if os.path.exists(os.path.join(cgroup_root, "memory", "memory.memsw.limit_in_bytes")):
        return True
    if not os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
        return False
    with suppress(OSError), os.scandir(cgroup_root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return os.path.exists(os.path.join(entry.path, "memory.swap.max"))
    return False


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"invalid --cpus {text!r}", hint="e.g. --cpus 0.5 or 2") from None
    if math.isnan(value):
        raise InvalidArgument(f"invalid --cpus {text!r}", hint="e.g. --cpus 0.5 or 2")
    return value


def parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}", hint="give a whole number") from None


def parse_swap(text: str) -> int:
    return -1 if text.strip() == "-1" else parse_size(text, "--memory-swap")
