"""A private containerd for tests that pull with ``ctr`` (the registry's and the P2P
mirror's): its own root, state and socket, nothing shared with a host containerd."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


@contextlib.contextmanager
def private_containerd(tmp_path: Path) -> Iterator[str]:
    """A private containerd (own root, state and socket); yields its socket. Stopped,
    its mounts undone, at the end."""
    base = tmp_path / "containerd"
    base.mkdir()
    # unix socket paths are capped near 104 bytes: pytest's tmp paths can be longer
    short = Path(tempfile.mkdtemp(prefix="ctr-", dir="/tmp"))
    sock = short / "c.sock"
    config = base / "config.toml"
    config.write_text(_CONFIG.format(root=base / "root", state=base / "state", sock=sock))
    log = (base / "log").open("wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            ["ctr", "-a", str(sock), "version"], capture_output=True, check=False
        ).returncode:
            assert proc.poll() is None, (base / "log").read_text()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.2)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        prefix = str(base) + "/"
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = line.split()[4]
            if target.startswith(prefix):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        shutil.rmtree(short, ignore_errors=True)
