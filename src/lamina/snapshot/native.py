"""NativeSnapshotter: every active snapshot a full copy, mounted by bind mounts.

For filesystems where overlayfs cannot run (overlay on overlay, some network and FUSE
filesystems). ``prepare`` copies the parent's whole tree (contents with holes, owners,
modes, times, xattrs, hardlinks, devices; :mod:`lamina.snapshot.fsutil`), so each
snapshot is self-contained and its ``fs`` is the complete tree: layers are applied into
it in tree mode (whiteouts delete), and ``lamina diff`` compares it with the parent's
:meth:`~NativeSnapshotter.path`. A view copies nothing: committed snapshots never change,
so it is a read-only bind mount of its parent's tree (its own directory stays empty).
Snapshots live under ``<lamina root>/snapshots-native``.
"""

from __future__ import annotations

import os

from lamina.snapshot.api import Kind, Mount
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.fsutil import copy_tree
from lamina.snapshot.metadata import Record
from lamina.stateroot import SNAPSHOT_FS, SNAPSHOTS_NATIVE


class NativeSnapshotter(DirSnapshotter):
    SUBDIR = SNAPSHOTS_NATIVE
    overlay = False

    def _fill(self, tmp: str, kind: Kind, chain: list[int]) -> None:
        fs = os.path.join(tmp, SNAPSHOT_FS)
        os.mkdir(fs, 0o755)
        os.chmod(fs, 0o755)
        if chain and kind is Kind.ACTIVE:
            copy_tree(self._fs(chain[0]), fs)

    def _mounts(self, rec: Record, chain: list[int]) -> list[Mount]:
        if rec.kind is Kind.ACTIVE:
            return [Mount("bind", self._fs(rec.id), ("rbind", "rw"))]
        return [Mount("bind", self._fs(chain[0] if chain else rec.id), ("rbind", "ro"))]
