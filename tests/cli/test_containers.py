"""`lamina run` and friends end to end: real overlayfs, real runc, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.snapshot.overlay import OverlaySnapshotter

pytestmark = [pytest.mark.root, pytest.mark.interop]


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    """The lamina fixture with a busybox image called `bb`."""
    lamina("bootstrap", "busybox", "-t", "bb")
    return lamina


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _snapshot_dir(lamina: Lamina) -> Path:
    return Path(lamina.root) / "snapshots"  # type: ignore[attr-defined]


def test_exit_code_output_and_rm(bb: Lamina) -> None:
    out = bb("run", "--rm", "bb", "echo", "hello")
    assert out.stdout == "hello\n"
    failed = bb("run", "--rm", "bb", "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    root = str(bb.root)  # type: ignore[attr-defined]
    # A bridge --rm run returns before netavark's teardown ends: at most the network
    # namespaces are still bound, until the next network command has waited for them.
    netns = f"{root}/runtime/netns/"
    left = [line.split()[4] for line in _mounts().splitlines() if root in line.split()[4]]
    assert all(m.startswith(netns) for m in left), left
    bb("network", "inspect", "lamina")
    assert root not in _mounts()


def test_seed_overlay_walkthrough(bb: Lamina, tmp_path: Path) -> None:
    """The seed's OverlayFS walk-through through `lamina run`, `diff` and `commit`."""
    # build the seed image by committing a container that wrote the two lower files
    bb(
        "run",
        "--name",
        "prep",
        "bb",
        "sh",
        "-c",
        "echo lower > /in_lower.txt; echo old > /in_both.txt",
    )
    bb("commit", "prep", "seed:1")
    bb(
        "run",
        "--name",
        "walk",
        "seed:1",
        "sh",
        "-c",
        "echo new > /in_upper.txt; rm /in_lower.txt; echo modified >> /in_both.txt",
    )
    diff = bb("diff", "walk").stdout.splitlines()
    assert "A /in_upper.txt" in diff
    assert "D /in_lower.txt" in diff
    assert "C /in_both.txt" in diff
    assert not any(
        "/etc/hosts" in line or "/etc/hostname" in line or "resolv.conf" in line for line in diff
    )
    # the upper dir holds a new file, a whiteout and a copied-up file
    ps = json.loads(bb("ps", "-a", "--json").stdout)
    walk = next(c for c in ps if c["name"] == "walk")
    snap = OverlaySnapshotter(str(bb.root))  # type: ignore[attr-defined]
    upper_path = Path(snap.upper_dir(walk["snapshot_key"]))
    lowers = [Path(snap.path(p)) for p in snap.parents(walk["snapshot_key"])]
    assert (upper_path / "in_upper.txt").read_text() == "new\n"
    wh = os.lstat(upper_path / "in_lower.txt")
    assert os.major(wh.st_rdev) == 0 and os.minor(wh.st_rdev) == 0
    assert (upper_path / "in_both.txt").read_text() == "old\nmodified\n"
    # the image's layer on disk is unchanged
    seed_layer = [d for d in lowers if (d / "in_lower.txt").exists()]
    assert len(seed_layer) == 1
    assert (seed_layer[0] / "in_lower.txt").read_text() == "lower\n"
    assert (seed_layer[0] / "in_both.txt").read_text() == "old\n"
    bb("commit", "walk", "seed:2")
    bb("save", "seed:2", "-o", str(tmp_path / "layout"), "--format", "oci-dir")
    index = json.loads((tmp_path / "layout/index.json").read_text())
    manifest = json.loads(
        (tmp_path / "layout/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    top = tmp_path / "layout/blobs/sha256" / manifest["layers"][-1]["digest"][7:]
    names = subprocess.run(
        ["tar", "-tzf", str(top)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert ".wh.in_lower.txt" in names and "in_upper.txt" in names
    assert not any(n.startswith("etc/host") or n == "etc/resolv.conf" for n in names)
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:2", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    assert not (rootfs / "in_lower.txt").exists()
    assert (rootfs / "in_upper.txt").read_text() == "new\n"
    assert (rootfs / "in_both.txt").read_text() == "old\nmodified\n"
    for name in ("prep", "walk"):
        bb("rm", name)


def test_two_containers_share_lower_layers(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")  # unpack once
    snaps = _snapshot_dir(bb)
    before = {p.name for p in snaps.iterdir()}
    bb("run", "-d", "--name", "one", "bb", "sh", "-c", "echo one > /mine; sleep 30")
    bb("run", "-d", "--name", "two", "bb", "sh", "-c", "sleep 30")
    try:
        after = {p.name for p in snaps.iterdir()}
        assert len(after - before) == 2  # one upper dir per container, no layer copies
        time.sleep(0.3)
        seen = bb("exec", "two", "sh", "-c", "cat /mine 2>/dev/null || echo absent")
        assert seen.stdout == "absent\n"
        assert bb("exec", "one", "cat", "/mine").stdout == "one\n"
    finally:
        bb("rm", "-f", "one", "two")
    assert {p.name for p in snaps.iterdir()} == before


def test_init_files_come_from_lamina(bb: Lamina) -> None:
    out = bb(
        "run",
        "--rm",
        "--hostname",
        "box1",
        "bb",
        "sh",
        "-c",
        "cat /etc/hostname; grep -c box1 /etc/hosts; test -s /etc/resolv.conf && echo ok",
    )
    assert out.stdout.split() == ["box1", "1", "ok"]


def test_options(bb: Lamina, tmp_path: Path) -> None:
    env = bb("run", "--rm", "-e", "A=1", "-e", "B=two words", "bb", "sh", "-c", 'echo "$A|$B"')
    assert env.stdout == "1|two words\n"
    wd = bb("run", "--rm", "-w", "/new/dir", "bb", "pwd")
    assert wd.stdout == "/new/dir\n"
    user = bb("run", "--rm", "-u", "nobody", "bb", "id", "-u")
    assert user.stdout == "65534\n"
    ep = bb("run", "--rm", "--entrypoint", "echo", "bb", "from", "entrypoint")
    assert ep.stdout == "from entrypoint\n"
    ro = bb("run", "--rm", "--read-only", "bb", "sh", "-c", "touch /x", check=False)
    assert ro.returncode != 0
    vol = tmp_path / "vol"
    vol.mkdir()
    bb("run", "--rm", "-v", f"{vol}:/data", "bb", "sh", "-c", "echo hi > /data/f")
    assert (vol / "f").read_text() == "hi\n"
    rov = bb(
        "run", "--rm", "-v", f"{vol}:/data:ro", "bb", "sh", "-c", "echo x > /data/g", check=False
    )
    assert rov.returncode != 0 and not (vol / "g").exists()
    net = bb("run", "--rm", "--network", "none", "bb", "ls", "/sys/class/net")
    assert net.stdout.split() == ["lo"]


def test_detached_logs_stop(bb: Lamina) -> None:
    cid = bb(
        "run",
        "-d",
        "--name",
        "svc",
        "bb",
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ).stdout.strip()
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while "started" not in bb("logs", "svc").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bb("logs", "svc").stdout.startswith("started")
    ps = json.loads(bb("ps", "--json").stdout)
    assert [c["name"] for c in ps] == ["svc"]
    bb("stop", "-t", "5", "svc")
    assert "bye" in bb("logs", "svc").stdout
    assert json.loads(bb("ps", "--json").stdout) == []
    state = json.loads(bb("ps", "-a", "--json").stdout)[0]
    assert state["status"] == "exited" and state["exit_code"] == 0
    bb("rm", "svc")


def test_signal_forwarding(bb: Lamina) -> None:
    root = str(bb.root)  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [
            *LAMINA,
            "--root",
            root,
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 42
    proc.stdout.close()


def test_crun_or_clear_fallback(bb: Lamina) -> None:
    out = bb("run", "--rm", "--runtime", "crun", "bb", "echo", "via crun")
    assert out.stdout == "via crun\n"


def test_bad_input(bb: Lamina, tmp_path: Path) -> None:
    unknown = bb("run", "--rm", "no-such-image", "true", check=False)
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    missing = bb("run", "--rm", "bb", "/no/such/binary", check=False)
    assert missing.returncode == 127
    nocmd_dir = tmp_path / "empty"
    nocmd_dir.mkdir()
    (nocmd_dir / "f").write_text("x")
    bb("import", str(nocmd_dir), "-t", "nocmd")
    nocmd = bb("run", "--rm", "nocmd", check=False)
    assert nocmd.returncode != 0 and "command" in nocmd.stderr
    assert "Traceback" not in nocmd.stderr + missing.stderr + unknown.stderr
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    assert str(bb.root) not in _mounts()  # type: ignore[attr-defined]


def test_kill_9_of_lamina_then_rm_cleans(bb: Lamina) -> None:
    root = str(bb.root)  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [*LAMINA, "--root", root, "run", "--name", "victim", "bb", "sh", "-c", "echo up; sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"
    proc.kill()
    proc.wait()
    proc.stdout.close()  # not read to the end: the container may still hold it open
    bb("rm", "-f", "victim")
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    assert root not in _mounts()
    # the image still runs
    assert bb("run", "--rm", "bb", "echo", "fine").stdout == "fine\n"


def test_mount_umount(bb: Lamina) -> None:
    bb("run", "--name", "m", "bb", "sh", "-c", "echo data > /file")
    path = bb("mount", "m").stdout.strip()
    assert Path(path, "file").read_text() == "data\n"
    bb("umount", "m")
    assert not Path(path, "file").exists()
    assert Path(bb("mount", "m").stdout.strip(), "file").read_text() == "data\n"
    bb("rm", "m")
    assert path not in _mounts()


def test_full_disk_in_upper_dir(lamina: Lamina) -> None:
    root = Path(lamina.root)  # type: ignore[attr-defined]
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)], check=True)
    try:
        lamina("bootstrap", "busybox", "-t", "bb")
        full = lamina(
            "run",
            "--name",
            "filler",
            "bb",
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1M count=64",
            check=False,
        )
        assert full.returncode != 0
        lamina("rm", "filler")
        assert str(root) + "/" not in _mounts().replace(f" {root} ", " ")
        # space is back and the image is intact
        assert lamina("run", "--rm", "bb", "echo", "ok").stdout == "ok\n"
        lamina("save", "bb", "-o", str(root / "bb.tar"), "--format", "oci")
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_prune_removes_unpacked_layers_of_removed_images(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")
    snaps = _snapshot_dir(bb)
    assert any(snaps.iterdir())
    kept = json.loads(bb("prune", "--json").stdout)
    assert kept["removed_snapshots"] == 0  # the image still needs them
    bb("run", "--name", "holder", "bb", "true")
    bb("rmi", "-f", "bb")  # a container uses it: untagging takes -f
    held = json.loads(bb("prune", "--json").stdout)
    assert held["removed_snapshots"] == 0  # a container still stands on them
    assert held["removed_blobs"] == 0  # ...and on the image's blobs
    bb("rm", "holder")
    pruned = json.loads(bb("prune", "--json").stdout)
    assert pruned["removed_snapshots"] == 2  # the busybox layer and its init snapshot
    assert [p for p in snaps.iterdir() if p.name.isdigit()] == []
