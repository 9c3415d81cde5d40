"""A container on real overlay snapshots: image layer, init layer, upper dir; rm cleans all."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.initlayer import make_placeholders
from lamina.runtime.bundle.spec import RunOptions
from lamina.runtime.lifecycle import prepare_bundle, remove, run_foreground
from lamina.runtime.records.containers import Container, ContainerStore
from lamina.snapshot.mount import mount_all
from lamina.snapshot.mountinfo import mountinfo
from lamina.snapshot.overlay import OverlaySnapshotter

pytestmark = [pytest.mark.root, pytest.mark.interop]


@pytest.fixture
def snap(tmp_path: Path, busybox_rootfs: Path) -> OverlaySnapshotter:
    """An overlay snapshotter with the busybox layer and a shared init layer over it."""
    s = OverlaySnapshotter(str(tmp_path / "root"))
    s.prepare("extract", None)
    subprocess.run(["cp", "-a", f"{busybox_rootfs}/.", s.upper_dir("extract")], check=True)
    s.commit("busybox", "extract")
    s.prepare("init-extract", "busybox")
    make_placeholders(s.upper_dir("init-extract"))
    s.commit("busybox-init", "init-extract")
    return s


def start(store: ContainerStore, snap: OverlaySnapshotter) -> Container:
    c = store.create(image_ref="busybox", image_id="sha256:" + "3" * 64, runtime="runc")
    key = f"container-{c.id}"
    mount_all(snap.prepare(key, "busybox-init"), c.rootfs)
    return store.update(c.id, snapshot_key=key)


def run_in(store: ContainerStore, c: Container, script: str, **fields: object) -> str:
    options = RunOptions(args=("sh", "-c", script), **fields)  # type: ignore[arg-type]
    prepare_bundle(store, c, ContainerConfig(), options)
    out = Path(store.path(c.id, "test-out"))
    with open(out, "wb") as f:
        assert run_foreground(store, c, stdout=f.fileno()).exit_code == 0
    return out.read_text()


def mounts_under(path: str) -> list[str]:
    return [m.mount_point for m in mountinfo() if m.mount_point.startswith(path)]


def test_writes_land_in_the_upper_dir_only(tmp_path: Path, snap: OverlaySnapshotter) -> None:
    store = ContainerStore(str(tmp_path / "root"))
    c = start(store, snap)
    out = run_in(
        store,
        c,
        "echo new > /in_upper.txt; rm /bin/ls; echo changed >> /etc/passwd; cat /etc/hostname",
        hostname="ovl",
    )
    assert out == "ovl\n"
    upper = Path(snap.upper_dir(c.snapshot_key))
    assert (upper / "in_upper.txt").read_text() == "new\n"
    whiteout = os.lstat(upper / "bin/ls")
    assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0
    assert (upper / "etc/passwd").read_text().endswith("changed\n")
    # the init files are bind mounts from the container's directory: not in the upper
    # dir, so never in `lamina diff` or `commit`
    for name in ("hosts", "hostname", "resolv.conf"):
        assert not (upper / "etc" / name).exists()
    assert sorted(os.listdir(upper / "etc")) == ["passwd"]
    # the image's layer is unchanged
    assert (Path(snap.path("busybox")) / "bin/ls").exists()
    # a second container of the image does not see the first one's writes
    d = start(store, snap)
    assert run_in(store, d, "ls /in_upper.txt 2>/dev/null; ls /bin/ls") == "/bin/ls\n"

    for x in (c, d):
        remove(store, store.get(x.id), remove_snapshot=lambda r: snap.remove(r.snapshot_key))
    assert mounts_under(store.dir) == []
    assert sorted(i.name for i in snap.walk()) == ["busybox", "busybox-init"]
    assert store.list() == []


def test_read_only_root_on_overlay(tmp_path: Path, snap: OverlaySnapshotter) -> None:
    store = ContainerStore(str(tmp_path / "root"))
    c = start(store, snap)
    out = run_in(
        store,
        c,
        "touch /x 2>/dev/null || echo refused; cat /etc/hostname",
        read_only=True,
        hostname="ro",
    )
    assert out == "refused\nro\n"
    # the mount points came from the init layer: the runtime wrote nothing
    assert os.listdir(snap.upper_dir(c.snapshot_key)) == []
    remove(store, store.get(c.id), remove_snapshot=lambda r: snap.remove(r.snapshot_key))


def test_rm_after_a_crash_unmounts(tmp_path: Path, snap: OverlaySnapshotter) -> None:
    # lamina died after mounting and writing the bundle, before running anything
    store = ContainerStore(str(tmp_path / "root"))
    c = start(store, snap)
    prepare_bundle(store, c, ContainerConfig(cmd=("true",)), RunOptions())
    assert mounts_under(c.rootfs) == [c.rootfs]
    remove(store, store.get(c.id), remove_snapshot=lambda r: snap.remove(r.snapshot_key))
    assert mounts_under(store.dir) == []
    assert not os.path.exists(store.path(c.id))
    assert [i.name for i in snap.walk() if i.name.startswith("container-")] == []
