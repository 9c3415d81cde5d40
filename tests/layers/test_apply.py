"""apply_layer: entry kinds, metadata, sparse output, whiteouts, overlay mode."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from helpers.tree import (
    Dir,
    File,
    Hardlink,
    Symlink,
    assert_trees_equal,
    build_tree,
    snapshot_tree,
    spec_snapshot,
)
from lamina.errors import InvalidFormat, Unsafe
from lamina.layers import fsops
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.apply import ApplyStats, apply_layer
from lamina.layers.tar import TarWriter

# build_tree gives files to uid 0 and the applier chowns: root throughout
pytestmark = pytest.mark.root

T0 = 1_600_000_000 * 10**9  # whole seconds: the tar writer stores seconds

Item = Entry | tuple[Entry, bytes]


def F(name: str, data: bytes = b"", *, mode: int = 0o644, **kw: object) -> tuple[Entry, bytes]:
    return Entry(name, EntryType.FILE, mode=mode, size=len(data), mtime_ns=T0, **kw), data  # type: ignore[arg-type]


def D(name: str, *, mode: int = 0o755, **kw: object) -> Entry:
    kw.setdefault("mtime_ns", T0)
    return Entry(name, EntryType.DIR, mode=mode, **kw)  # type: ignore[arg-type]


def S(name: str, target: str) -> Entry:
    return Entry(name, EntryType.SYMLINK, mode=0o777, linkname=target, mtime_ns=T0)


def H(name: str, target: str) -> Entry:
    return Entry(name, EntryType.HARDLINK, linkname=target, mtime_ns=T0)


def WH(name: str) -> Entry:
    return Entry(name, EntryType.FILE, mode=0o644)


def layer(*items: Item) -> bytes:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    for item in items:
        entry, data = item if isinstance(item, tuple) else (item, b"")
        writer.add_bytes(entry, data)
    writer.close()
    return buf.getvalue()


@pytest.fixture(
    params=[
        pytest.param(
            True,
            id="openat2",
            marks=pytest.mark.skipif(not fsops.HAVE_OPENAT2, reason="no openat2"),
        ),
        pytest.param(False, id="manual"),
    ]
)
def walk(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def apply(data: bytes, target: Path, walk: bool | None = None, **kw: object) -> ApplyStats:
    return apply_layer(io.BytesIO(data), target, use_openat2=walk, **kw)  # type: ignore[arg-type]


def test_every_kind_and_its_metadata(tmp_path: Path, walk: bool) -> None:
    data = layer(
        D("etc", mode=0o755),
        F("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
        D("bin", mode=0o750, uid=0, gid=10),
        F("bin/su", b"\x7fELF", mode=0o4755, uid=0, gid=0),
        F("bin/wall", b"wall", mode=0o2755, uid=1000, gid=5),
        F("bin/user-suid", b"x", mode=0o4711, uid=1000, gid=1000),
        D("tmp", mode=0o1777),
        S("bin/sh", "busybox"),
        S("abs", "/etc/passwd"),
        H("etc/passwd-hard", "etc/passwd"),
        Entry("fifo", EntryType.FIFO, mode=0o620, uid=7, gid=8, mtime_ns=T0),
    )
    stats = apply(data, tmp_path, walk)
    assert (stats.entries, stats.files, stats.skipped) == (11, 4, 0)
    expected = spec_snapshot(
        {
            "etc/": Dir(mtime_ns=T0),
            "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\n", mtime_ns=T0),
            "etc/passwd-hard": Hardlink("etc/passwd"),
            "bin/": Dir(mode=0o750, gid=10, mtime_ns=T0),
            "bin/su": File(b"\x7fELF", mode=0o4755, mtime_ns=T0),
            "bin/wall": File(b"wall", mode=0o2755, uid=1000, gid=5, mtime_ns=T0),
            "bin/user-suid": File(b"x", mode=0o4711, uid=1000, gid=1000, mtime_ns=T0),
            "tmp/": Dir(mode=0o1777, mtime_ns=T0),
            "bin/sh": Symlink("busybox", mtime_ns=T0),
            "abs": Symlink("/etc/passwd", mtime_ns=T0),
        }
    )
    got = snapshot_tree(tmp_path, mtimes=True)
    fifo = got.pop("fifo")
    assert (fifo.kind, fifo.mode, fifo.uid, fifo.gid, fifo.mtime_ns) == ("fifo", 0o620, 7, 8, T0)
    assert_trees_equal(got, expected, mtimes=True)


def test_not_same_owner_keeps_our_ids(tmp_path: Path) -> None:
    apply(layer(F("f", b"x", mode=0o4755, uid=1234, gid=4321)), tmp_path, same_owner=False)
    st = (tmp_path / "f").stat()
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(st.st_mode) == 0o4755


def test_sparse_output(tmp_path: Path) -> None:
    mib = 1 << 20
    body = b"head" + bytes(3 * mib) + b"middle" + bytes(2 * mib + 5) + b"tail"
    zeros = bytes(mib + 4096)
    data = layer(F("sparse", body), F("zeros", zeros), F("trailing", b"x" * 10 + bytes(mib)))
    apply(data, tmp_path)
    for name, content in (("sparse", body), ("zeros", zeros)):
        st = (tmp_path / name).stat()
        assert st.st_size == len(content)
        assert (tmp_path / name).read_bytes() == content
    assert (tmp_path / "sparse").stat().st_blocks * 512 <= 64 * 1024  # 5 MiB logical
    assert (tmp_path / "zeros").stat().st_blocks == 0
    trailing = tmp_path / "trailing"
    assert trailing.stat().st_size == mib + 10
    assert trailing.read_bytes() == b"x" * 10 + bytes(mib)
    assert trailing.stat().st_blocks * 512 <= 64 * 1024


def test_unaligned_zero_runs_are_written(tmp_path: Path) -> None:
    # zeros that do not cover a whole aligned 4 KiB block are data, not holes
    body = b"a" * 100 + bytes(4096) + b"b" * 100 + bytes(4000) + b"c"
    apply(layer(F("f", body)), tmp_path)
    assert (tmp_path / "f").read_bytes() == body


def test_xattr_policy(tmp_path: Path) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service
    xattrs = {
        "user.mime": b"text/plain",
        "trusted.evil": b"1",
        "security.selinux": b"system_u:object_r:shadow_t:s0",
        "security.capability": cap,
        "user.overlay.opaque": b"y",
        "trusted.overlay.opaque": b"y",
    }
    data = layer(
        F("f", b"x", xattrs=xattrs),
        D("d", xattrs={"user.a": b"b", "trusted.overlay.redirect": b"/x"}),
    )
    stats = apply(data, tmp_path)
    assert stats.skipped == 5  # 4 on f, 1 on d
    f = tmp_path / "f"
    names = set(os.listxattr(f))
    assert {"user.mime", "security.capability"} <= names
    assert not {"trusted.evil", "user.overlay.opaque", "trusted.overlay.opaque"} & names
    assert os.getxattr(f, "security.capability") == cap
    assert os.getxattr(tmp_path / "d", "user.a") == b"b"
    assert "trusted.overlay.redirect" not in os.listxattr(tmp_path / "d")
    assert any("trusted.evil" in w for w in stats.warnings)


def test_capability_needs_privilege(tmp_path: Path) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    stats = apply(
        layer(F("f", b"x", xattrs={"security.capability": cap})), tmp_path, privileged=False
    )
    assert stats.skipped == 1
    assert "security.capability" not in os.listxattr(tmp_path / "f")


def test_directory_times_survive_children(tmp_path: Path, walk: bool) -> None:
    data = layer(
        D("a", mode=0o555),  # read-only: children must still land
        D("a/b", mode=0o700),
        F("a/b/f", b"x"),
        S("a/l", "b"),
        F("a/g", b"y"),
    )
    apply(data, tmp_path, walk)
    for d in ("a", "a/b"):
        assert (tmp_path / d).lstat().st_mtime_ns == T0
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o555
    assert (tmp_path / "a/l").lstat().st_mtime_ns == T0


def test_dir_over_dir_merges_and_later_metadata_wins(tmp_path: Path) -> None:
    build_tree(tmp_path, {"d/lower": File(b"l")})
    data = layer(D("d", mode=0o700), F("d/new", b"n"), D("d", mode=0o751, mtime_ns=T0 + 10**9))
    apply(data, tmp_path)
    assert sorted(os.listdir(tmp_path / "d")) == ["lower", "new"]
    st = (tmp_path / "d").stat()
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime_ns == T0 + 10**9


def test_replacements(tmp_path: Path, walk: bool) -> None:
    build_tree(
        tmp_path,
        {
            "file-to-dir": File(b"f"),
            "dir-to-file/child": File(b"c"),
            "dir-to-link/child": File(b"c"),
            "link-to-file": Symlink("/etc/passwd"),
            "same": File(b"old"),
        },
    )
    data = layer(
        D("file-to-dir"),
        F("file-to-dir/x", b"x"),
        F("dir-to-file", b"now a file"),
        S("dir-to-link", "file-to-dir"),
        F("link-to-file", b"regular"),
        F("same", b"first"),
        F("same", b"second"),
    )
    apply(data, tmp_path, walk)
    assert (tmp_path / "file-to-dir/x").read_bytes() == b"x"
    assert (tmp_path / "dir-to-file").read_bytes() == b"now a file"
    assert os.readlink(tmp_path / "dir-to-link") == "file-to-dir"
    assert not (tmp_path / "link-to-file").is_symlink()
    assert (tmp_path / "link-to-file").read_bytes() == b"regular"
    assert (tmp_path / "same").read_bytes() == b"second"


def test_writes_through_symlinked_parent_land_inside(tmp_path: Path, walk: bool) -> None:
    target = tmp_path / "target"
    target.mkdir()
    data = layer(S("etc", "/real"), D("real"), F("etc/passwd", b"inside"), S("up", "../../.."))
    data2 = layer(F("up/escaped", b"nope"))
    apply(data, target, walk)
    apply(data2, target, walk)
    assert (target / "real/passwd").read_bytes() == b"inside"
    assert (target / "escaped").read_bytes() == b"nope"  # '..' above the root is the root
    assert sorted(os.listdir(tmp_path)) == ["target"]


def test_hardlinks(tmp_path: Path, walk: bool) -> None:
    build_tree(tmp_path, {"lower/f": File(b"lower"), "real/g": File(b"g"), "s": Symlink("real")})
    data = layer(
        H("to-lower", "lower/f"),
        H("via-symlink", "s/g"),  # the target's parent resolves in the root
        F("new", b"new"),
        H("new-link", "new"),
        H("new", "new"),  # to itself: nothing to do
    )
    apply(data, tmp_path, walk)
    ino = lambda p: (tmp_path / p).lstat().st_ino  # noqa: E731
    assert ino("to-lower") == ino("lower/f")
    assert ino("via-symlink") == ino("real/g")
    assert ino("new-link") == ino("new")
    assert (tmp_path / "new").read_bytes() == b"new"


@pytest.mark.parametrize(
    "items",
    [
        [H("l", "missing")],
        [D("d"), H("l", "d")],
        [F("f", b""), H("l", "f/x")],
    ],
    ids=["missing", "directory", "below-a-file"],
)
def test_bad_hardlinks(tmp_path: Path, items: list[Item]) -> None:
    with pytest.raises(InvalidFormat):
        apply(layer(*items), tmp_path)


def test_devices(tmp_path: Path) -> None:
    null = Entry("dev/null", EntryType.CHAR, mode=0o666, devmajor=1, devminor=3, mtime_ns=T0)
    loop = Entry("dev/loop0", EntryType.BLOCK, mode=0o660, gid=6, devmajor=7, devminor=0)
    data = layer(D("dev"), null, loop)
    stats = apply(data, tmp_path / "no" if False else tmp_path)
    assert stats.skipped == 2 and "device" in stats.warnings[0]
    assert os.listdir(tmp_path / "dev") == []
    other = tmp_path / "allowed"
    other.mkdir()
    stats = apply(data, other, limits=Limits(allow_devices=True))
    assert stats.skipped == 0
    st = (other / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = (other / "dev/loop0").lstat()
    assert stat.S_ISBLK(st.st_mode) and st.st_gid == 6
    stats = apply(
        data, other, limits=Limits(allow_devices=True), privileged=False, same_owner=False
    )
    assert stats.skipped == 2


# --------------------------------------------------------------------------- whiteouts


def _lower(tmp_path: Path) -> Path:
    build_tree(
        tmp_path,
        {
            "a": File(b"a"),
            "keep": File(b"k"),
            "d/x": File(b"x"),
            "d/y": File(b"y"),
            "d/sub/z": File(b"z"),
            "gone/deep/er": File(b"e"),
        },
    )
    return tmp_path


def test_whiteouts_remove_lower_paths(tmp_path: Path, walk: bool) -> None:
    root = _lower(tmp_path)
    stats = apply(
        layer(WH(".wh.a"), WH("d/.wh.x"), WH(".wh.gone"), WH("nowhere/.wh.x"), WH("d/.wh.nope")),
        root,
        walk,
    )
    assert stats.whiteouts == 5
    assert_trees_equal(
        root,
        spec_snapshot({"keep": File(b"k"), "d/y": File(b"y"), "d/sub/z": File(b"z")}, mtimes=False),
        ignore=["d", "d/sub"],
    )
    assert not (root / "nowhere").exists()  # a whiteout makes nothing


def test_whiteout_never_removes_this_layers_paths(tmp_path: Path) -> None:
    root = _lower(tmp_path)
    apply(layer(F("a", b"new a"), WH(".wh.a"), WH(".wh.n"), F("n", b"n")), root)
    assert (root / "a").read_bytes() == b"new a"
    assert (root / "n").read_bytes() == b"n"


def test_whiteout_of_dir_keeps_this_layers_children(tmp_path: Path) -> None:
    root = _lower(tmp_path)
    apply(layer(F("d/new", b"n"), WH(".wh.d")), root)
    assert os.listdir(root / "d") == ["new"]


@pytest.mark.parametrize("first", [True, False], ids=["marker-first", "marker-last"])
def test_opaque_keeps_this_layers_children_in_any_order(tmp_path: Path, first: bool) -> None:
    root = _lower(tmp_path)
    marker = WH("d/.wh..wh..opq")
    items: list[Item] = [D("d"), D("d/sub"), F("d/sub/new", b"n"), F("d/n2", b"2")]
    items.insert(1 if first else len(items), marker)
    apply(layer(*items), root)
    assert sorted(os.listdir(root / "d")) == ["n2", "sub"]
    assert os.listdir(root / "d/sub") == ["new"]  # lower d/sub/z is hidden too
    assert (root / "keep").exists()


def test_opaque_without_dir_entry_makes_the_dir(tmp_path: Path) -> None:
    apply(layer(WH("new/.wh..wh..opq")), tmp_path)
    assert (tmp_path / "new").is_dir() and os.listdir(tmp_path / "new") == []


def test_aufs_metadata_is_ignored(tmp_path: Path) -> None:
    stats = apply(layer(WH(".wh..wh.plnk"), D(".wh..wh.aufs")), tmp_path)
    assert os.listdir(tmp_path) == [] and stats.skipped == 2


@pytest.mark.parametrize("name", [".wh.", "d/.wh.", ".wh..", "d/.wh..."])
def test_bad_whiteouts_are_unsafe(tmp_path: Path, name: str) -> None:
    root = _lower(tmp_path / "t")
    before = snapshot_tree(tmp_path, mtimes=True)
    with pytest.raises(Unsafe):
        apply(layer(WH(name)), root)
    assert_trees_equal(snapshot_tree(tmp_path, mtimes=True), before, mtimes=True)


def test_overlay_mode(tmp_path: Path, walk: bool) -> None:
    data = layer(
        D("d", mode=0o750),
        WH("d/.wh..wh..opq"),
        F("d/new", b"n"),
        WH(".wh.gone"),
        WH("e/.wh.x"),  # parent made
        F("kept", b"k"),
        WH(".wh.kept"),  # this layer's own: ignored
        WH("o/.wh..wh..opq"),  # dir made, marked
    )
    stats = apply(data, tmp_path, walk, mode="overlay")
    assert stats.whiteouts == 5
    for wh in ("gone", "e/x"):
        st = (tmp_path / wh).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(tmp_path / "d", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(tmp_path / "o", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "kept").read_bytes() == b"k"
    assert (tmp_path / "d/new").read_bytes() == b"n"


def test_overlay_hardlink_outside_layer(tmp_path: Path) -> None:
    with pytest.raises(InvalidFormat) as info:
        apply(layer(H("l", "lower-file")), tmp_path, mode="overlay")
    assert info.value.hint and "overlay" in info.value.hint


def test_empty_layer(tmp_path: Path) -> None:
    stats = apply(layer(), tmp_path)
    assert stats == ApplyStats()
    assert os.listdir(tmp_path) == []


def test_target_must_exist(tmp_path: Path) -> None:
    from lamina.errors import NotFound

    with pytest.raises(NotFound):
        apply(layer(F("f", b"")), tmp_path / "missing")
