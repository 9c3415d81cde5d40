"""NativeSnapshotter: every snapshot a full copy, mounted by bind mounts.

For filesystems where overlayfs cannot run (overlay on overlay, some network and FUSE
filesystems). ``prepare`` and ``view`` copy the parent's whole tree (contents with holes,
owners, modes, times, xattrs, hardlinks, devices; :mod:`lamina.snapshot.fsutil`), so
each snapshot is self-contained and its ``fs`` is the complete tree: layers are applied
into it in tree mode (whiteouts delete), and ``lamina diff`` must compare it with the
parent's tree. Snapshots live under ``<lamina root>/snapshots-native``.
"""

from __future__ import annotations

import os

from lamina.snapshot.api import Kind, Mount
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.fsutil import copy_tree
from lamina.snapshot.metadata import Record


class NativeSnapshotter(DirSnapshotter):
    SUBDIR = "snapshots-native"
    overlay = False

    def _fill(self, tmp: str, kind: Kind, chain: list[int]) -> None:
        fs = os.path.join(tmp, "fs")
        os.mkdir(fs, 0o755)
        os.chmod(fs, 0o755)
        if chain:
            copy_tree(self._fs(chain[0]), fs)

    def _mounts(self, rec: Record, chain: list[int]) -> list[Mount]:
        mode = "rw" if rec.kind is Kind.ACTIVE else "ro"
        return [Mount("bind", self._fs(rec.id), ("rbind", mode))]
