"""A lazy mount outlives the process that asked for it, and ``sweep`` cleans up after a
daemon killed with SIGKILL (a stale FUSE mount, an EROFS mount nobody fills)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lamina.lazy.mount import daemon

pytestmark = pytest.mark.root

ASK = """
import json, sys
from lamina.lazy.mount import daemon
from lamina.lazy.mount.api import SourceSpec
design, src, mnt, state = sys.argv[1:]
spec = SourceSpec("lamina.lazy.mount.localdir:from_json", json.dumps({"root": src}))
print(daemon.start(design, spec, mnt, state).pid)
"""


@pytest.mark.parametrize("design", ["fuse", "erofs"])
def test_mount_survives_its_caller_and_sweep_cleans_after_kill9(
    design: str, tmp_path: Path
) -> None:
    src, mnt, state_root = tmp_path / "src", tmp_path / "mnt", tmp_path / "state"
    (src / "dir").mkdir(parents=True)
    (src / "dir/file").write_bytes(b"payload " * 1000)
    (src / "other").write_bytes(b"never read before the kill " * 100)
    mnt.mkdir()
    state = state_root / "one"
    proc = subprocess.run(
        [sys.executable, "-c", ASK, design, str(src), str(mnt), str(state)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    pid = int(proc.stdout)
    try:
        # The caller has exited; the mount is still served.
        assert (mnt / "dir/file").read_bytes() == b"payload " * 1000
        assert daemon.sweep(str(state_root)) == []  # a live daemon is left alone
        assert daemon.is_mounted(str(mnt))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while daemon._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert daemon.is_mounted(str(mnt))  # what a kill -9 leaves behind
        assert daemon.sweep(str(state_root)) == [str(mnt)]
        assert not daemon.is_mounted(str(mnt))
        assert not state.exists()
    finally:
        handle = daemon.read_state(str(state))
        if handle is not None:
            daemon.stop(handle)
