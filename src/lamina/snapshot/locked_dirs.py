"""Directories a process holds with an flock while it makes or deletes them, so that a
crash cleanup (:meth:`lamina.snapshot.base.DirSnapshotter.cleanup`) takes only those
whose maker died: the kernel drops the lock with the process. Light imports only
(``lamina run``'s fast path uses it).
"""

from __future__ import annotations

import errno
import fcntl
import os

from lamina.stateroot import SNAPSHOT_TMP_PREFIX

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Held:
    """A directory this process holds with an flock, so that cleanup leaves it alone."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def make(cls, root: str) -> Held:
        path = os.path.join(root, SNAPSHOT_TMP_PREFIX + os.urandom(8).hex())
        os.mkdir(path, 0o700)
        fd = os.open(path, _O_DIR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    @classmethod
    def take(cls, path: str) -> Held | None:
        """Lock an existing directory whose owner is gone; None if it is busy or gone."""
        try:
            fd = os.open(path, _O_DIR)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return cls(path, fd)

    def rename(self, path: str) -> None:
        os.rename(self.path, path)
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
