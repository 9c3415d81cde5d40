"""Network namespaces that outlive any process: each one a bind mount of an ``nsfs``
inode on an empty file under the state root (``runtime/netns/<id>``), as ``ip netns``
does under ``/run/netns``. The OCI runtime joins it (``linux.namespaces[].path``) and
netavark configures it by path, so it must exist before the container starts and stay
until netavark has torn its interfaces down.

Made with util-linux's ``unshare --net=FILE`` (one process, a few ms); removed with a
lazy unmount. Light imports only: the fast path of ``lamina run`` calls these.
"""

from __future__ import annotations

import os

from lamina.lightstd import suppress
from lamina.network.spawn import run_tool

UNSHARE_PATHS = ("/usr/bin/unshare", "/bin/unshare")
_MNT_DETACH = 2


def create(path: str) -> None:
    """A new, empty network namespace bound at ``path`` (made; must not exist)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    unshare = next((p for p in UNSHARE_PATHS if os.access(p, os.X_OK)), "unshare")
    try:
        run_tool([unshare, f"--net={path}", "true"], what="unshare --net")
    except BaseException:
        os.unlink(path)
        raise


def is_bound(path: str) -> bool:
    """Whether ``path`` holds a namespace (an nsfs bind mount), not just the empty file."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def remove(path: str) -> None:
    """Unmount and delete the namespace file; no error when it is already gone."""
    if is_bound(path):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.umount2(path.encode(), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err != 22:  # EINVAL: not a mount point (any more)
                from lamina.errors import ToolError

                raise ToolError(f"cannot unmount the network namespace {path}: {os.strerror(err)}")
    with suppress(FileNotFoundError):
        os.unlink(path)
