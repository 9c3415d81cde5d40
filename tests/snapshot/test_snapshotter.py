"""The one shared suite every Snapshotter passes (ARCHITECTURE.md §6): semantics, errors,
persistence, concurrency, and real mounts."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from helpers.tree import assert_trees_equal, snapshot_tree
from lamina.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from lamina.snapshot.api import Kind, Mount, Snapshotter, Usage
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.mountinfo import mountinfo
from lamina.snapshot.overlay import OverlaySnapshotter

Mounted = Callable[..., contextlib.AbstractContextManager[Path]]


def layer(
    s: Snapshotter, name: str, parent: str | None, files: Mapping[str, bytes], **labels: str
) -> str:
    """Commit a snapshot holding ``files`` (written straight into its upper dir)."""
    key = f"tmp-{name}"
    s.prepare(key, parent, labels=labels or None)
    for rel, data in files.items():
        path = Path(s.upper_dir(key), rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    s.commit(name, key)
    return name


def dirs(s: DirSnapshotter) -> list[str]:
    return sorted(n for n in os.listdir(s.root) if n.isdigit())


# --------------------------------------------------------------------------- semantics


def test_lifecycle_and_stat(snapshotter: DirSnapshotter) -> None:
    s = snapshotter
    s.prepare("k1", labels={"a": "1"})
    info = s.stat("k1")
    assert (info.kind, info.name, info.parent, dict(info.labels)) == (
        Kind.ACTIVE,
        "k1",
        None,
        {"a": "1"},
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info.created)
    s.commit("base", "k1")
    with pytest.raises(NotFound):
        s.stat("k1")  # the key is gone after commit
    base = s.stat("base")
    assert base.kind is Kind.COMMITTED and dict(base.labels) == {"a": "1"}
    s.prepare("k2", "base")
    s.commit("top", "k2", labels={"b": "2"})
    assert dict(s.stat("top").labels) == {"b": "2"}  # commit labels replace
    s.view("v", "top")
    s.prepare("c", "top")
    got = {i.name: (i.kind, i.parent) for i in s.walk()}
    assert got == {
        "base": (Kind.COMMITTED, None),
        "top": (Kind.COMMITTED, "base"),
        "v": (Kind.VIEW, "top"),
        "c": (Kind.ACTIVE, "top"),
    }
    assert s.parents("c") == ["top", "base"]
    assert s.parents("base") == []
    # a second instance on the same root sees the same state
    again = type(s)(os.path.dirname(s.root))
    assert {i.name for i in again.walk()} == set(got)
    assert again.path("top") == s.path("top")


def test_errors(snapshotter: DirSnapshotter) -> None:
    s = snapshotter
    s.prepare("a")
    with pytest.raises(AlreadyExists):
        s.prepare("a")
    with pytest.raises(AlreadyExists):
        s.view("a")
    with pytest.raises(NotFound):
        s.prepare("b", "missing")
    with pytest.raises(InvalidArgument, match="not committed"):
        s.prepare("b", "a")  # an active snapshot cannot be a parent
    with pytest.raises(InvalidArgument):
        s.prepare("")
    with pytest.raises(InvalidArgument):
        s.prepare("bad\nkey")
    with pytest.raises(InvalidArgument):
        s.prepare("x" * 2000)
    with pytest.raises(InvalidArgument):
        s.prepare("l", labels={"k": "v" * 5000})
    with pytest.raises(NotFound):
        s.commit("n", "missing")
    with pytest.raises(NotFound):
        s.remove("missing")
    with pytest.raises(NotFound):
        s.mounts("missing")
    with pytest.raises(NotFound):
        s.usage("missing")
    s.commit("A", "a")
    with pytest.raises(InvalidArgument, match="committed"):
        s.mounts("A")
    with pytest.raises(InvalidArgument):
        s.upper_dir("A")
    with pytest.raises(InvalidArgument):
        s.commit("B", "A")  # committed is immutable
    s.view("v", "A")
    with pytest.raises(InvalidArgument):
        s.commit("V", "v")  # views are never committed
    with pytest.raises(InvalidArgument):
        s.upper_dir("v")
    # commit to a taken name keeps the active key (the unpacker removes it itself)
    s.prepare("b", "A")
    with pytest.raises(AlreadyExists):
        s.commit("A", "b")
    with pytest.raises(AlreadyExists):
        s.commit("v", "b")  # keys and names share one namespace
    assert s.stat("b").kind is Kind.ACTIVE
    # nothing above left half-made directories or metadata
    assert sorted(i.name for i in s.walk()) == ["A", "b", "v"]
    assert len(dirs(s)) == 3
    assert s.cleanup() == 0


@pytest.mark.parametrize("child", ["active", "view", "committed"])
def test_a_child_blocks_removal(snapshotter: DirSnapshotter, child: str) -> None:
    s = snapshotter
    layer(s, "base", None, {"f": b"1"})
    if child == "view":
        s.view("c", "base")
    else:
        s.prepare("c", "base")
        if child == "committed":
            s.commit("c2", "c")
    with pytest.raises(Conflict, match="parent"):
        s.remove("base")
    assert s.stat("base").kind is Kind.COMMITTED
    s.remove("c2" if child == "committed" else "c")
    s.remove("base")
    assert list(s.walk()) == [] and dirs(s) == []


def test_remove_deletes_directories_and_ids_are_not_reused(snapshotter: DirSnapshotter) -> None:
    s = snapshotter
    layer(s, "l1", None, {"a": b"x" * 10000})
    p1 = s.path("l1")
    s.prepare("k", "l1")
    assert len(dirs(s)) == 2
    s.remove("k")
    s.remove("l1")
    assert not os.path.exists(p1) and dirs(s) == []
    assert [n for n in os.listdir(s.root) if n.startswith("tmp-")] == []
    s.prepare("again")
    assert s.path("again") != p1  # ids are never reused


def test_permissions(snapshotter: DirSnapshotter) -> None:
    """Unpacked layers must not be reachable by host users (ARCHITECTURE.md §4)."""
    s = snapshotter
    s.prepare("k")
    assert stat.S_IMODE(os.stat(s.root).st_mode) == 0o700
    fs = s.upper_dir("k")
    assert stat.S_IMODE(os.stat(os.path.dirname(fs)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fs).st_mode) == 0o755  # a container's / as images expect


def test_usage(snapshotter: DirSnapshotter) -> None:
    s = snapshotter
    layer(s, "base", None, {"big": os.urandom(1 << 20)})
    s.prepare("k", "base")
    upper = Path(s.upper_dir("k"))
    (upper / "a").write_bytes(os.urandom(100_000))
    (upper / "d").mkdir()
    (upper / "d" / "b").write_bytes(os.urandom(50_000))
    os.link(upper / "a", upper / "hard")
    use = s.usage("k")
    base = s.usage("base")
    assert base.size >= 1 << 20 and base.inodes == 2  # root + big
    if s.overlay:
        assert use.inodes == 4  # root, a (+hard, one inode), d, d/b
        assert 150_000 <= use.size < 300_000
    else:
        assert use.inodes == 5  # the whole tree: big is there too
        assert use.size >= (1 << 20) + 150_000
    assert isinstance(use, Usage)


def test_native_copy_keeps_metadata(lamina_root: Path) -> None:
    """The native snapshotter's copies keep everything a layer can carry."""
    from helpers.tree import Device, Dir, Fifo, File, Hardlink, Symlink, build_tree
    from lamina.snapshot.native import NativeSnapshotter

    if os.geteuid() != 0:
        pytest.skip("needs root (chown, mknod)")
    s = NativeSnapshotter(str(lamina_root))
    s.prepare("k")
    spec = {
        "bin/su": File(b"#!su", mode=0o4755, uid=0, gid=0),
        "home/u/f": File(b"data", mode=0o600, uid=1000, gid=1000, xattrs={"user.k": b"v"}),
        "home/u/": Dir(mode=0o700, uid=1000, gid=1000),
        "sparse": File(b"head", sparse_size=10 << 20),
        "link": Hardlink("home/u/f"),
        "sym": Symlink("/etc/passwd"),
        "abs": Symlink("../../../../outside"),
        "dev/null": Device("c", 1, 3),
        "fifo": Fifo(mode=0o600),
        "ro/": Dir(mode=0o555),
        "ro/inner": File(b"i"),
    }
    build_tree(s.upper_dir("k"), spec)
    s.commit("base", "k")
    s.prepare("copy", "base")
    assert_trees_equal(s.path("base"), s.upper_dir("copy"), mtimes=True)
    sparse = os.stat(os.path.join(s.upper_dir("copy"), "sparse"))
    assert sparse.st_blocks * 512 < 1 << 20  # the hole stayed a hole


# --------------------------------------------------------------------------- concurrency


SNAPSHOT_WORKER = """
    import sys
    from lamina.snapshot.native import NativeSnapshotter
    from lamina.snapshot.overlay import OverlaySnapshotter
    cls = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}[sys.argv[1]]
    s = cls(sys.argv[2])
    for i in range(25):
        key = f"{sys.argv[3]}-{i}"
        s.prepare(key, "base")
        if i % 2:
            s.commit(key + "-c", key)
        if i % 5 == 0:
            s.remove(key + "-c" if i % 2 else key)
"""


def test_concurrent_processes_lose_no_update(
    snapshotter: DirSnapshotter, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    s = snapshotter
    layer(s, "base", None, {"f": b"1"})
    kind = "overlay" if s.overlay else "native"
    root = os.path.dirname(s.root)
    procs = [spawn(SNAPSHOT_WORKER, kind, root, f"w{n}") for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = {i.name for i in s.walk()}
    want = {"base"}
    for n in range(4):
        for i in range(25):
            if i % 5 == 0:
                continue
            want.add(f"w{n}-{i}-c" if i % 2 else f"w{n}-{i}")
    assert names == want
    assert len(dirs(s)) == len(want)  # every directory is named, none lost
    assert s.cleanup() == 0


# --------------------------------------------------------------------------- mounts


@pytest.mark.root
def test_active_mount_copy_on_write(snapshotter: DirSnapshotter, mounted: Mounted) -> None:
    s = snapshotter
    layer(s, "l1", None, {"in_lower.txt": b"lower", "in_both.txt": b"v1", "dir/a": b"a"})
    layer(s, "l2", "l1", {"dir/b": b"b"})
    before = snapshot_tree(s.path("l1"), mtimes=True)
    before2 = snapshot_tree(s.path("l2"), mtimes=True)
    mounts = s.prepare("c", "l2")
    assert s.mounts("c") == mounts
    with mounted(mounts) as root:
        assert (root / "in_lower.txt").read_bytes() == b"lower"
        assert sorted(os.listdir(root / "dir")) == ["a", "b"]
        (root / "in_upper.txt").write_bytes(b"new")
        (root / "in_lower.txt").unlink()
        (root / "in_both.txt").write_bytes(b"v2")
        (root / "dir" / "a").unlink()
        assert sorted(os.listdir(root)) == ["dir", "in_both.txt", "in_upper.txt"]
    upper = Path(s.upper_dir("c"))
    assert (upper / "in_upper.txt").read_bytes() == b"new"
    assert (upper / "in_both.txt").read_bytes() == b"v2"
    if s.overlay:
        # deletions are overlay whiteouts: char devices 0/0 in the upper dir
        for gone in ("in_lower.txt", "dir/a"):
            st = os.lstat(upper / gone)
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
        assert sorted(os.listdir(upper)) == ["dir", "in_both.txt", "in_lower.txt", "in_upper.txt"]
    else:
        assert not (upper / "in_lower.txt").exists()
        assert sorted(os.listdir(upper / "dir")) == ["b"]
    # the layers below are unchanged
    assert_trees_equal(before, s.path("l1"), mtimes=True)
    assert_trees_equal(before2, s.path("l2"), mtimes=True)
    # and the mounts can be made again from the snapshot's state
    with mounted(s.mounts("c")) as root:
        assert (root / "in_both.txt").read_bytes() == b"v2"
        assert not (root / "in_lower.txt").exists()


@pytest.mark.root
def test_base_active_snapshot_is_writable(snapshotter: DirSnapshotter, mounted: Mounted) -> None:
    s = snapshotter
    with mounted(s.prepare("k")) as root:
        (root / "f").write_bytes(b"x")
    assert Path(s.upper_dir("k"), "f").read_bytes() == b"x"


@pytest.mark.root
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_views_are_read_only(snapshotter: DirSnapshotter, mounted: Mounted, depth: int) -> None:
    s = snapshotter
    parent = None
    for i in range(depth):
        parent = layer(s, f"l{i}", parent, {f"f{i}": str(i).encode(), "top": str(i).encode()})
    mounts = s.view("v", parent)
    assert all(m.readonly for m in mounts)
    with mounted(mounts) as root:
        assert sorted(os.listdir(root)) == sorted(
            [f"f{i}" for i in range(depth)] + (["top"] if depth else [])
        )
        if depth:
            assert (root / "top").read_bytes() == str(depth - 1).encode()
        with pytest.raises(OSError) as exc:
            (root / "new").write_bytes(b"x")
        assert exc.value.errno == errno.EROFS


@pytest.mark.root
def test_two_actives_on_one_parent_are_isolated(
    snapshotter: DirSnapshotter, mounted: Mounted
) -> None:
    s = snapshotter
    layer(s, "base", None, {"shared": b"s"})
    with mounted(s.prepare("a", "base")) as a, mounted(s.prepare("b", "base")) as b:
        (a / "only-a").write_bytes(b"a")
        (a / "shared").write_bytes(b"changed in a")
        assert not (b / "only-a").exists()
        assert (b / "shared").read_bytes() == b"s"


@pytest.mark.root
def test_mounted_overlay_cannot_be_committed_or_removed(
    lamina_root: Path, mounted: Mounted
) -> None:
    s = OverlaySnapshotter(str(lamina_root))
    layer(s, "base", None, {"f": b"1"})
    with mounted(s.prepare("k", "base")):
        with pytest.raises(Conflict, match="mounted"):
            s.commit("c", "k")
        with pytest.raises(Conflict, match="mounted"):
            s.remove("k")
    s.commit("c", "k")


@pytest.mark.root
@pytest.mark.parametrize("api", ["auto", "legacy"])
def test_130_layer_chain(snapshotter: DirSnapshotter, mounted: Mounted, api: str) -> None:
    """Past overlay's page-size option limit: the new mount API's lowerdir+ (auto), and
    relative lower dirs from a common working directory (legacy)."""
    if api == "legacy" and not snapshotter.overlay:
        pytest.skip("the mount API choice only matters for overlay")
    s = snapshotter
    parent = None
    for i in range(130):
        parent = layer(s, f"layer-{i}", parent, {f"f{i:03}": b"x", "top": str(i).encode()})
    mounts = s.prepare("c", parent)
    if s.overlay:
        assert len(mounts[0].option("lowerdir").split(":")) == 130  # type: ignore[union-attr]
        assert len(",".join(mounts[0].options)) > 4096  # too long for mount(2) as is
    with mounted(mounts, mount_api=api) as root:
        if s.overlay:
            (info,) = [m for m in mountinfo() if m.mount_point == str(root)]
            if api == "auto":  # one lowerdir+ per layer, absolute paths
                assert info.super_options.count(f"lowerdir+={s.root}/") == 130
            else:  # one lowerdir, relative to the snapshots directory
                assert re.search(r"(^|,)lowerdir=\d+/fs:\d+/fs:", info.super_options)
        names = os.listdir(root)
        assert len(names) == 131
        assert (root / "top").read_bytes() == b"129"
        assert (root / "f000").read_bytes() == b"x"
        (root / "f000").unlink()
    assert not Path(s.path("layer-0"), "f000").is_symlink()
    assert Path(s.path("layer-0"), "f000").read_bytes() == b"x"


def test_overlay_refuses_paths_it_cannot_express(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="contains ','"):
        OverlaySnapshotter(str(tmp_path / "a,b"))
    with pytest.raises(InvalidArgument, match="contains ':'"):
        OverlaySnapshotter(str(tmp_path / "a:b"))
    assert os.listdir(tmp_path) == []  # refused before anything was made


def test_mount_data_shapes(lamina_root: Path) -> None:
    """What the runtime receives: one overlay over the chain, binds at the edges."""
    s = OverlaySnapshotter(str(lamina_root))
    assert s.prepare("k") == [Mount("bind", s.upper_dir("k"), ("rbind", "rw"))]
    s.commit("l1", "k")
    assert s.view("v1", "l1") == [Mount("bind", s.path("l1"), ("rbind", "ro"))]
    s.prepare("k2", "l1")
    s.commit("l2", "k2")
    (m,) = s.prepare("k3", "l2")
    assert m.type == "overlay"
    assert m.option("lowerdir") == f"{s.path('l2')}:{s.path('l1')}"
    assert m.option("upperdir") == s.upper_dir("k3")
    assert m.option("workdir") == os.path.join(os.path.dirname(s.upper_dir("k3")), "work")
    assert "index=off" in m.options and not m.readonly
    (v,) = s.view("v2", "l2")
    assert v.type == "overlay" and v.readonly and v.option("upperdir") is None


@pytest.mark.root
def test_check_overlay_and_the_native_fallback(tmp_path: Path, mounted: Mounted) -> None:
    """Overlay cannot use an overlay as its upper dir: check_overlay says so, with the
    kernel's words, and the native snapshotter works there instead."""
    from lamina.errors import Unsupported
    from lamina.snapshot.native import NativeSnapshotter
    from lamina.snapshot.overlay import check_overlay

    check_overlay(str(tmp_path / "plain"))  # works on this host's filesystem
    assert [n for n in os.listdir(tmp_path / "plain" / "snapshots") if n.startswith("tmp-")] == []
    lower, upper, work = (tmp_path / n for n in ("l", "u", "w"))
    for d in (lower, upper, work):
        d.mkdir()
    outer = Mount(
        "overlay", "overlay", (f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}")
    )
    with mounted([outer]) as on_overlay:
        with pytest.raises(Unsupported, match="not supported as upperdir") as exc:
            check_overlay(str(on_overlay / "root"))
        assert exc.value.hint and "native" in exc.value.hint
        s = NativeSnapshotter(str(on_overlay / "root"))
        layer(s, "base", None, {"f": b"1"})
        with mounted(s.prepare("k", "base")) as root:
            assert (root / "f").read_bytes() == b"1"
            (root / "g").write_bytes(b"2")
        assert sorted(os.listdir(s.upper_dir("k"))) == ["f", "g"]
