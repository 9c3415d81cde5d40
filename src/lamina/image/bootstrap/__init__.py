"""Base images made from the host, for a machine that reaches no image registry.

- ``busybox``: ``lamina bootstrap busybox``, a root filesystem of Debian's busybox-static
  with a symlink per applet and a minimal ``/etc`` (imported with
  :func:`lamina.image.importer.import_rootfs`);
- ``debian``: ``lamina bootstrap debian``, debootstrap from the host's apt mirror, tidied
  and imported as a one-layer image.

The names below are imported when first used, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.image.bootstrap.busybox import find_busybox, make_busybox_rootfs
    from lamina.image.bootstrap.debian import DebianOptions, bootstrap_debian, find_debootstrap

_HOMES = {
    "find_busybox": "lamina.image.bootstrap.busybox",
    "make_busybox_rootfs": "lamina.image.bootstrap.busybox",
    "DebianOptions": "lamina.image.bootstrap.debian",
    "bootstrap_debian": "lamina.image.bootstrap.debian",
    "find_debootstrap": "lamina.image.bootstrap.debian",
}

__all__ = [
    "DebianOptions",
    "bootstrap_debian",
    "find_busybox",
    "find_debootstrap",
    "make_busybox_rootfs",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
