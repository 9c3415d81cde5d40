"""Snapshots: layers and container roots as directories, returned as mounts.

Contracts in :mod:`lamina.snapshot.api`; implementations :mod:`~lamina.snapshot.overlay`
(overlayfs) and :mod:`~lamina.snapshot.native` (full copies), on the shared
:mod:`~lamina.snapshot.base` with its :mod:`~lamina.snapshot.metadata` file (and
:mod:`~lamina.snapshot.raw_metadata`, the same file for ``lamina run``'s fast path) and
:mod:`~lamina.snapshot.locked_dirs`; :mod:`~lamina.snapshot.mount` is the only code that
calls mount(2) and umount2(2), :mod:`~lamina.snapshot.mountinfo` the one reader of
``/proc/self/mountinfo``. The names below are imported on first use (PEP 562), so that
a command pays only for the modules it uses.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.snapshot.api import (
        Info,
        Kind,
        Mount,
        Snapshotter,
        Usage,
        is_readonly,
    )
    from lamina.snapshot.mount import (
        is_mounted,
        mount_all,
        mount_overlay,
        unmount,
        unmount_all,
    )
    from lamina.snapshot.mountinfo import (
        MountInfo,
        mountinfo,
        mounts_under,
        overlay_uppers,
        parse_mountinfo,
    )
    from lamina.snapshot.native import (
        NativeSnapshotter,
    )
    from lamina.snapshot.overlay import (
        OverlaySnapshotter,
        check_overlay,
    )

__all__ = [
    "Info",
    "Kind",
    "Mount",
    "MountInfo",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "Snapshotter",
    "Usage",
    "check_overlay",
    "is_mounted",
    "is_readonly",
    "mount_all",
    "mount_overlay",
    "mountinfo",
    "mounts_under",
    "overlay_uppers",
    "parse_mountinfo",
    "unmount",
    "unmount_all",
]

_HOME = {
    "Info": "api",
    "Kind": "api",
    "Mount": "api",
    "Snapshotter": "api",
    "Usage": "api",
    "is_readonly": "api",
    "OverlaySnapshotter": "overlay",
    "check_overlay": "overlay",
    "NativeSnapshotter": "native",
    "is_mounted": "mount",
    "mount_all": "mount",
    "mount_overlay": "mount",
    "unmount": "mount",
    "unmount_all": "mount",
    "MountInfo": "mountinfo",
    "mountinfo": "mountinfo",
    "mounts_under": "mountinfo",
    "overlay_uppers": "mountinfo",
    "parse_mountinfo": "mountinfo",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
