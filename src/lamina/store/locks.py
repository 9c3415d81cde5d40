"""File locks of the store: flock(2) on files under ``<root>/locks``.

flock locks belong to an open file description, so two opens of the same file conflict
even within one process; the kernel drops a lock when its holder dies (a ``kill -9``
leaves no stale lock). Two kinds are used:

- :func:`exclusive` opens the lock file afresh and takes LOCK_EX for the length of a
  ``with`` block (ref updates, gc);
- :class:`SharedLease` keeps one LOCK_SH per process and lock file, counted, so leases
  nest and are shared by threads and by every :class:`~lamina.store.local.LocalStore`
  on the same root; the lock is released when the last holder leaves.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from lamina.errors import Conflict

_POLL_MIN = 0.005
_POLL_MAX = 0.1


def open_lock_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def flock(fd: int, op: int, timeout: float | None, what: str, hint: str | None = None) -> None:
    """flock(fd, op), waiting at most ``timeout`` seconds (None: forever); Conflict on timeout."""
    if timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + timeout
    delay = _POLL_MIN
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise Conflict(f"timed out after {timeout:g}s waiting for {what}", hint=hint)
        time.sleep(min(delay, left))
        delay = min(delay * 2, _POLL_MAX)


@contextmanager
def exclusive(
    path: str, timeout: float | None = None, what: str = "a lock", hint: str | None = None
) -> Iterator[None]:
    fd = open_lock_file(path)
    try:
        flock(fd, fcntl.LOCK_EX, timeout, what, hint)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


class SharedLease:
    """A counted, process-wide LOCK_SH on one lock file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._pid = os.getpid()
        # RLock: a writer's weakref finalizer may release from inside acquire's thread.
        self._mutex = threading.RLock()
        self._fd = -1
        self._count = 0
        self._local = threading.local()

    def acquire(self, timeout: float | None = None) -> None:
        if os.getpid() != self._pid:
            raise Conflict("a store lease cannot be used across fork", hint="open the store again")
        with self._mutex:
            if self._count == 0:
                fd = open_lock_file(self._path)
                try:
                    flock(
                        fd,
                        fcntl.LOCK_SH,
                        timeout,
                        "the store's gc lock (garbage collection is running)",
                        "wait for `lamina prune` to finish, then try again",
                    )
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._count += 1
            self._local.depth = getattr(self._local, "depth", 0) + 1

    def release(self) -> None:
        if os.getpid() != self._pid:
            return  # inherited by a forked child: the parent still owns the lock
        with self._mutex:
            if self._count == 0:
                return
            self._count -= 1
            self._local.depth = max(0, getattr(self._local, "depth", 0) - 1)
            if self._count == 0:
                os.close(self._fd)
                self._fd = -1

    def held_by_current_thread(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    def held(self) -> bool:
        return self._count > 0

    def _forget_after_fork(self) -> None:
        # The child shares the parent's open file description; closing our copy keeps the
        # child from pinning the parent's lock after the parent releases it.
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
        self._fd = -1


class _Registry:
    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.leases: dict[str, SharedLease] = {}

    def after_fork_in_child(self) -> None:
        self.mutex = threading.Lock()  # may have been held by another thread at fork
        for lease in self.leases.values():
            lease._forget_after_fork()
        self.leases.clear()


_registry = _Registry()
os.register_at_fork(after_in_child=_registry.after_fork_in_child)


def shared_lease(path: str) -> SharedLease:
    """The process's lease object for a lock file (one per real path)."""
    key = os.path.realpath(path)
    with _registry.mutex:
        lease = _registry.leases.get(key)
        if lease is None:
            lease = _registry.leases[key] = SharedLease(key)
        return lease
