"""Whether the kernel's OOM killer struck a container (Docker's ``OOMKilled``).

The keeper asks before the runtime starts: :func:`watch` makes the container's memory
cgroup itself (the spec's ``cgroupsPath``; runc and crun join a cgroup that exists) and
registers an eventfd on its ``memory.oom_control`` through ``cgroup.event_control``
(cgroup v1, the kernel's admin-guide "Memory Resource Controller", section 9), as
containerd's shim does. The kernel signals the eventfd on an OOM in the cgroup and once
more when the cgroup is removed; the runtime removes it as soon as the container ends,
so a thread reads the counter and the cgroup's ``oom_kill`` count while it still can.
Watching from the start leaves no window in which an early OOM goes unseen.

On a cgroup v2 host (``memory.events``) there is nothing to watch here yet: the watch
is None and ``OOMKilled`` stays false.
"""

from __future__ import annotations

import contextlib
import os
import threading

MEMORY_ROOT = "/sys/fs/cgroup/memory"


class OomWatch:
    """A running watch of one memory cgroup; :meth:`finish` tells whether it saw an OOM."""

    def __init__(self, directory: str, made: bool) -> None:
        self.directory = directory
        self._made = made
        self._oom = False
        self._stop = False
        self._efd = os.eventfd(0, os.EFD_CLOEXEC)
        control = os.open(os.path.join(directory, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(os.path.join(directory, "cgroup.event_control"), "w") as f:
                f.write(f"{self._efd} {control}")
        finally:
            os.close(control)
        self._thread = threading.Thread(target=self._wait, name="oom-watch", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        while True:
            try:
                count = os.eventfd_read(self._efd)
            except OSError:
                return
            if self._stop:
                return  # finish() woke it: it judges by itself
            # The kernel signals an OOM (before its oom_kill count moves) and the
            # cgroup's removal (after it left the filesystem): an event while the
            # cgroup exists, or two at once, is an OOM (containerd's rule too).
            gone = not os.path.isdir(self.directory)
            if count >= 2 or not gone:
                self._oom = True
            if gone:
                return

    def finish(self) -> bool:
        """After the container's process ended: whether the OOM killer struck; removes
        the cgroup if the runtime left it (it never started)."""
        if os.path.isdir(self.directory) and oom_kills(self.directory) > 0:
            self._oom = True
        if self._made:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)  # EBUSY while processes are in it: not ours then
        self._thread.join(timeout=0.5)  # the removal event normally ended it already
        if self._thread.is_alive():  # the runtime left the cgroup: wake the thread
            self._stop = True
            os.eventfd_write(self._efd, 1)
            self._thread.join()
        os.close(self._efd)
        return self._oom


def oom_kills(directory: str) -> int:
    """The ``oom_kill`` count of a v1 memory cgroup (0 when it cannot be read)."""
    try:
        with open(os.path.join(directory, "memory.oom_control"), encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def was_oom_killed(cgroups_path: str) -> bool:
    """Whether the OOM killer struck in the cgroup of a container that ended but is
    not deleted yet (a detached one: ``runc create``/``start`` leave the cgroup until
    ``delete``)."""
    directory = cgroup_dir(cgroups_path)
    return directory is not None and oom_kills(directory) > 0


def cgroup_dir(cgroups_path: str) -> str | None:
    """The v1 memory cgroup of an absolute ``cgroupsPath`` (None without cgroup v1)."""
    if not cgroups_path.startswith("/") or ".." in cgroups_path.split("/"):
        return None
    if not os.path.exists(os.path.join(MEMORY_ROOT, "memory.oom_control")):
        return None
    return os.path.join(MEMORY_ROOT, cgroups_path.lstrip("/"))


def watch(cgroups_path: str) -> OomWatch | None:
    """Start watching the memory cgroup ``cgroups_path`` (made here if missing); None
    where it cannot be watched (cgroup v2, no memory controller, no permission)."""
    directory = cgroup_dir(cgroups_path)
    if directory is None:
        return None
    made = False
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            made = True
        return OomWatch(directory, made)
    except OSError:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        return None
