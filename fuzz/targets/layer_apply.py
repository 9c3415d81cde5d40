"""Applying a layer tar onto a directory: whiteouts, opaque dirs, links, modes.

Each input gets a fresh directory under /dev/shm (tmpfs: no disk writes). Unprivileged
mode, so no device nodes; the first byte picks "tree" or "overlay" whiteouts.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile

from lamina.layers.api import Limits
from lamina.layers.apply import Mode, apply_layer

_LIMITS = Limits(max_header_bytes=4096, max_entries=64, max_layer_bytes=1 << 20)
_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None


def one_input(data: bytes) -> None:
    mode: Mode = "overlay" if data[:1] == b"o" else "tree"
    outer = tempfile.mkdtemp(prefix="lamina-fuzz-", dir=_BASE)
    try:
        # a sibling of the target: a write that escapes the root would land here
        target = os.path.join(outer, "root")
        os.mkdir(target)
        try:
            apply_layer(io.BytesIO(data[1:]), target, mode=mode, limits=_LIMITS, privileged=False)
        finally:
            stray = set(os.listdir(outer)) - {"root"}
            assert not stray, f"apply wrote outside its root: {sorted(stray)}"
    finally:
        for dirpath, dirnames, _ in os.walk(outer):
            for d in dirnames:  # a layer may leave directories without write permission
                path = os.path.join(dirpath, d)
                # os.walk lists a symlink to a directory among them; Linux cannot chmod
                # a link itself, and the one it names is walked on its own
                if not os.path.islink(path):
                    os.chmod(path, 0o700)
        shutil.rmtree(outer)
