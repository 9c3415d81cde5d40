"""Facts about this host and its processes that many rows need: the default lamina
root, a process's start time, the boot id.

Kept free of heavy imports (only ``os``): ``lamina run``'s fast path uses it, and every
millisecond of start-up counts there.
"""

from __future__ import annotations

import os


def default_root() -> str:
    """``$LAMINA_ROOT``; else /var/lib/lamina for root; else ``$XDG_DATA_HOME/lamina``."""
    env = os.environ.get("LAMINA_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/lamina"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # XDG Base Directory spec: a relative value is invalid and must be ignored.
    if not os.path.isabs(xdg):
        xdg = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "lamina")


def start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process in clock ticks since boot (field 22
    of /proc/<pid>/stat), or None. With the pid it names a process across pid reuse."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = data[data.rindex(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def boot_id() -> str:
    """This boot's random id; "unknown" when /proc does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def owner_label(pid: int | None = None) -> str:
    """``boot:pid:start`` of a process (this one by default): who a workspace, an
    extraction or a temp dir belongs to, stable across pid reuse and reboots."""
    pid = os.getpid() if pid is None else pid
    return f"{boot_id()}:{pid}:{start_time(pid)}"


def owner_alive(label: str) -> bool:
    """Whether the process an :func:`owner_label` names still runs."""
    boot, _, rest = label.partition(":")
    pid, _, start = rest.partition(":")
    return boot == boot_id() and pid.isdigit() and str(start_time(int(pid))) == start
