"""OverlaySnapshotter: each snapshot a directory, stacked by the kernel's overlayfs.

A committed snapshot is one layer's own files (its ``fs`` dir, with overlay whiteouts:
char 0/0 devices and ``trusted.overlay.opaque`` directories); an active snapshot is an
empty upper dir over its parent chain. Mounts (see :mod:`lamina.snapshot.api`):

- active with parents: ``overlay`` with ``lowerdir`` = the chain's ``fs`` dirs, nearest
  first, ``upperdir`` = its ``fs``, ``workdir`` = its ``work``;
- active without a parent: a read-write bind mount of its ``fs``;
- view of one layer (or of nothing): a read-only bind mount of that ``fs``;
- view of several layers: a read-only ``overlay`` of the lower dirs alone.

Overlay options and the lowerdir limit are explained in :mod:`lamina.snapshot.mount`.
Layers live under ``<lamina root>/snapshots``.
"""

from __future__ import annotations

import os

from lamina.errors import Conflict, InvalidArgument, LaminaError, Unsupported
from lamina.snapshot.api import Kind, Mount
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.fsutil import remove_tree
from lamina.snapshot.locked_dirs import Held
from lamina.snapshot.metadata import Record
from lamina.snapshot.mountinfo import overlay_uppers
from lamina.stateroot import OVERLAY_OPTIONS, SNAPSHOT_FS, SNAPSHOT_WORK, SNAPSHOTS

# Characters overlay's option syntax gives a meaning to (or mount(2) splits on).
_BAD_PATH_CHARS = frozenset(",:\\=\n\t ")


class OverlaySnapshotter(DirSnapshotter):
    SUBDIR = SNAPSHOTS
    overlay = True

    def _check_root(self, path: str) -> None:
        bad = sorted(set(path) & _BAD_PATH_CHARS)
        if bad:
            raise InvalidArgument(
                f"overlay cannot use {path!r}: the path contains {''.join(bad)!r}",
                hint="pick a --root without commas, colons, '=', backslashes or spaces",
            )

    def _fill(self, tmp: str, kind: Kind, chain: list[int]) -> None:
        fs = os.path.join(tmp, SNAPSHOT_FS)
        os.mkdir(fs, 0o755)
        os.chmod(fs, 0o755)  # the root of a container: as images expect, whatever the umask
        os.mkdir(os.path.join(tmp, SNAPSHOT_WORK), 0o700)

    def _mounts(self, rec: Record, chain: list[int]) -> list[Mount]:
        if rec.kind is Kind.ACTIVE:
            if not chain:
                return [Mount("bind", self._fs(rec.id), ("rbind", "rw"))]
            return [
                Mount(
                    "overlay",
                    "overlay",
                    (
                        "lowerdir=" + ":".join(self._fs(i) for i in chain),
                        f"upperdir={self._fs(rec.id)}",
                        f"workdir={self._work(rec.id)}",
                        *OVERLAY_OPTIONS,
                    ),
                )
            ]
        if len(chain) <= 1:
            source = self._fs(chain[0]) if chain else self._fs(rec.id)
            return [Mount("bind", source, ("rbind", "ro"))]
        return [
            Mount(
                "overlay",
                "overlay",
                ("lowerdir=" + ":".join(self._fs(i) for i in chain), *OVERLAY_OPTIONS, "ro"),
            )
        ]

    def _check_unmounted(self, key: str, rec: Record) -> None:
        if rec.kind is Kind.ACTIVE and self._fs(rec.id) in overlay_uppers():
            raise Conflict(
                f"snapshot {key!r} is mounted", hint="unmount it (stop its container) first"
            )


def check_overlay(root: str) -> None:
    """Raise Unsupported (saying why) unless overlay snapshots work under lamina root
    ``root``: a real two-layer mount is made, written, whited out and taken down.

    For the CLI's snapshotter choice ("auto": overlay when this passes, else native).
    """
    from lamina.snapshot.mount import mount_all, unmount

    snap = OverlaySnapshotter(root)
    held = Held.make(snap.root)
    try:
        paths = {n: os.path.join(held.path, n) for n in ("lower", "upper", "work", "merged")}
        for path in paths.values():
            os.mkdir(path, 0o700)
        with open(os.path.join(paths["lower"], "f"), "wb"):
            pass
        mount = Mount(
            "overlay",
            "overlay",
            (
                f"lowerdir={paths['lower']}",
                f"upperdir={paths['upper']}",
                f"workdir={paths['work']}",
                *OVERLAY_OPTIONS,
            ),
        )
        try:
            mount_all([mount], paths["merged"])
        except LaminaError as exc:
            raise Unsupported(
                f"overlayfs does not work under {snap.root}: {exc}",
                hint="use the native snapshotter",
            ) from exc
        try:
            os.unlink(os.path.join(paths["merged"], "f"))
        finally:
            unmount(paths["merged"])
        st = os.lstat(os.path.join(paths["upper"], "f"))
        if st.st_rdev != 0 or (st.st_mode & 0o170000) != 0o020000:
            raise Unsupported(
                f"overlayfs under {snap.root} does not make char 0/0 whiteouts",
                hint="use the native snapshotter",
            )
    except OSError as exc:
        raise Unsupported(f"overlayfs does not work under {snap.root}: {exc}") from exc
    finally:
        remove_tree(held.path)
        held.close()
