"""diff_trees and diff_overlay_upper: what is written for every kind of change."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from helpers.tree import (
    Device,
    Dir,
    Fifo,
    File,
    Hardlink,
    Socket,
    Symlink,
    build_tree,
)
from lamina.errors import Conflict, Unsupported
from lamina.layers.api import Entry, EntryType, LayerStats
from lamina.layers.diff import TreeReader, diff_overlay_upper, diff_trees
from lamina.layers.tar import TarWriter, read_entries

# build_tree gives files to uid 0 and the applier chowns: root throughout
pytestmark = pytest.mark.root

T0 = 1_600_000_000 * 10**9
T1 = 1_600_000_100 * 10**9


def run_diff(lower: Path | None, upper: Path, **kw: object) -> tuple[list[Entry], bytes]:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    diff_trees(lower, upper, writer, **kw)  # type: ignore[arg-type]
    writer.close()
    data = buf.getvalue()
    return [e for e, _ in read_entries(io.BytesIO(data))], data


def names(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]


def contents(data: bytes) -> dict[str, bytes]:
    return {e.name: r.read() for e, r in read_entries(io.BytesIO(data)) if e.type is EntryType.FILE}


def test_full_tree_order_and_kinds(tmp_path: Path) -> None:
    build_tree(
        tmp_path,
        {
            "a/b": File(b"ab"),
            "a.b": File(b"x"),
            "a-c": File(b"y"),
            "Z": Dir(mode=0o700, uid=3, gid=4),
            "z/l": Symlink("../a/b"),
            "z/h": Hardlink("a/b"),
            "z/fifo": Fifo(),
            "z/null": Device("c", 1, 3),
            "z/sock": Socket(),
            "é": File(b""),
        },
    )
    entries, data = run_diff(None, tmp_path)
    # depth first, siblings by name bytes: a directory right before its children
    assert names(entries) == [
        "Z",
        "a",
        "a/b",
        "a-c",
        "a.b",
        "z",
        "z/fifo",
        "z/h",
        "z/l",
        "z/null",
        "é",
    ]
    by = {e.name: e for e in entries}
    assert by["a/b"].type is EntryType.FILE and by["a/b"].size == 2
    assert by["z/h"].type is EntryType.HARDLINK and by["z/h"].linkname == "a/b"
    assert by["z/l"].type is EntryType.SYMLINK and by["z/l"].linkname == "../a/b"
    assert (by["z/null"].type, by["z/null"].devmajor, by["z/null"].devminor) == (
        EntryType.CHAR,
        1,
        3,
    )
    assert by["z/fifo"].type is EntryType.FIFO
    assert (by["Z"].mode, by["Z"].uid, by["Z"].gid) == (0o700, 3, 4)
    assert all(e.uname == "" and e.gname == "" for e in entries)
    assert contents(data)["a/b"] == b"ab"


def test_deterministic_and_clamped(tmp_path: Path) -> None:
    build_tree(tmp_path, {"f": File(b"x", mtime_ns=T1), "d/g": File(b"y", mtime_ns=T0)})
    _, one = run_diff(None, tmp_path)
    _, two = run_diff(None, tmp_path)
    assert one == two
    entries, _ = run_diff(None, tmp_path, clamp_mtime_ns=T0 + 10**9)
    assert {e.name: e.mtime_ns for e in entries}["f"] == T0 + 10**9
    assert {e.name: e.mtime_ns for e in entries}["d/g"] == T0


def test_xattrs_are_carried_but_not_overlay_or_selinux(tmp_path: Path) -> None:
    build_tree(tmp_path, {"f": File(b"", xattrs={"user.a": b"1"})})
    os.setxattr(tmp_path / "f", "trusted.overlay.origin", b"x")
    os.setxattr(tmp_path / "f", "security.selinux", b"system_u:object_r:etc_t:s0")
    entries, _ = run_diff(None, tmp_path)
    assert dict(entries[0].xattrs) == {"user.a": b"1"}


def _pair(tmp_path: Path, lower: dict[str, object], upper: dict[str, object]) -> tuple[Path, Path]:
    lo, up = tmp_path / "lower", tmp_path / "upper"
    build_tree(lo, lower)  # type: ignore[arg-type]
    build_tree(up, upper)  # type: ignore[arg-type]
    return lo, up


BASE: dict[str, object] = {
    "same": File(b"same"),
    "d/same": File(b"s"),
    "d/sub/deep": File(b"deep"),
    "link": Symlink("same"),
}


def test_identical_trees_give_an_empty_layer(tmp_path: Path) -> None:
    lo, up = _pair(tmp_path, BASE, BASE)
    entries, _ = run_diff(lo, up)
    assert entries == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"new": File(b"n")}, ["new"]),
        ({"d/sub/new": File(b"n")}, ["d", "d/sub", "d/sub/new"]),  # parents come along
        ({"same": File(b"other")}, ["same"]),  # size differs
        ({"same": File(b"SAME", mtime_ns=T1)}, ["same"]),  # same size, new content
        ({"same": File(b"same", mode=0o4755)}, ["same"]),
        ({"same": File(b"same", uid=1000)}, ["same"]),
        ({"same": File(b"same", gid=1000)}, ["same"]),
        ({"same": File(b"same", xattrs={"user.k": b"v"})}, ["same"]),
        ({"link": Symlink("elsewhere")}, ["link"]),
        ({"link": File(b"now a file")}, ["link"]),
        ({"d/sub": File(b"dir became a file")}, ["d", "d/sub"]),
        ({"same": Dir()}, ["same"]),
        ({"same": Dir(), "same/child": File(b"c")}, ["same", "same/child"]),
        ({"d": Dir(mode=0o700)}, ["d"]),  # metadata-only directory change
        ({"d": Dir(mtime_ns=T1)}, ["d"]),
        ({"fifo": Fifo()}, ["fifo"]),
    ],
)
def test_changes(tmp_path: Path, change: dict[str, object], expected: list[str]) -> None:
    upper = dict(BASE)
    upper.update(change)
    if "d/sub" in change and not isinstance(change["d/sub"], Dir):
        del upper["d/sub/deep"]
    if "same" in change and isinstance(change["same"], Dir):
        del upper["link"]
        expected = [*expected, ".wh.link"]
    lo, up = _pair(tmp_path, BASE, upper)
    entries, _ = run_diff(lo, up)
    assert sorted(names(entries)) == sorted(expected)


def test_rewrite_with_same_bytes_is_not_a_change(tmp_path: Path) -> None:
    upper = dict(BASE, same=File(b"same", mtime_ns=T1))
    lo, up = _pair(tmp_path, BASE, upper)
    assert run_diff(lo, up)[0] == []


def test_deletions_are_one_whiteout_each(tmp_path: Path) -> None:
    upper = {"same": File(b"same"), "d/same": File(b"s")}  # d/sub and link gone
    lo, up = _pair(tmp_path, BASE, upper)
    entries, _ = run_diff(lo, up)
    assert names(entries) == [".wh.link", "d", "d/.wh.sub"]
    wh = entries[0]
    assert (wh.type, wh.size) == (EntryType.FILE, 0)


def test_hardlink_groups(tmp_path: Path) -> None:
    lower = {"a": File(b"x"), "b": File(b"y"), "p": File(b"p"), "q": Hardlink("p")}
    upper = {
        "a": File(b"x"),  # unchanged, but gains a new name
        "a2": Hardlink("a"),
        "b": File(b"y"),  # untouched
        "p": File(b"p"),  # unlinked from q: both paths now differ in link count
        "q": File(b"p"),
    }
    lo, up = _pair(tmp_path, lower, upper)
    entries, data = run_diff(lo, up)
    by = {e.name: e for e in entries}
    assert sorted(by) == ["a", "a2", "p", "q"]
    assert by["a"].type is EntryType.FILE and contents(data)["a"] == b"x"
    assert by["a2"].type is EntryType.HARDLINK and by["a2"].linkname == "a"
    assert by["p"].type is EntryType.FILE and by["q"].type is EntryType.FILE


def test_whiteout_names_cannot_be_stored(tmp_path: Path) -> None:
    build_tree(tmp_path, {"d/.wh.x": File(b"")})
    with pytest.raises(Unsupported):
        run_diff(None, tmp_path)


def test_changed_file_is_a_conflict(tmp_path: Path) -> None:
    build_tree(tmp_path, {"f": File(b"12345")})
    with TreeReader(tmp_path) as tree:
        node = tree.scan(tree.fd, "")[0]
        (tmp_path / "f").unlink()
        (tmp_path / "f").write_bytes(b"longer now")
        with pytest.raises(Conflict):
            tree.open_file(node)


# --------------------------------------------------------------------------- overlay upper


def overlay_diff(
    upper: Path, lower_view: Path | None = None
) -> tuple[list[Entry], bytes, LayerStats]:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    stats = diff_overlay_upper(upper, writer, lower_view)
    writer.close()
    data = buf.getvalue()
    return [e for e, _ in read_entries(io.BytesIO(data))], data, stats


def test_overlay_upper(tmp_path: Path) -> None:
    build_tree(
        tmp_path,
        {
            "gone": Device("c", 0, 0),
            "d/gone": Device("c", 0, 0),
            "d/new": File(b"n"),
            "opaque/a": File(b"a"),
            "opaque/.a": File(b"."),
            "real-dev": Device("c", 1, 3),
        },
    )
    os.setxattr(tmp_path / "opaque", "trusted.overlay.opaque", b"y")
    os.setxattr(tmp_path / "d", "trusted.overlay.impure", b"y")
    os.setxattr(tmp_path / "d", "user.keep", b"1")
    entries, _, stats = overlay_diff(tmp_path)
    assert names(entries) == [
        ".wh.gone",
        "d",
        "d/.wh.gone",
        "d/new",
        "opaque",
        "opaque/.wh..wh..opq",  # right after its directory
        "opaque/.a",
        "opaque/a",
        "real-dev",
    ]
    assert stats.whiteouts == 3
    by = {e.name: e for e in entries}
    assert dict(by["d"].xattrs) == {"user.keep": b"1"}
    assert dict(by["opaque"].xattrs) == {}


def test_overlay_redirect_and_metacopy(tmp_path: Path) -> None:
    up, low = tmp_path / "upper", tmp_path / "lower"
    build_tree(up, {"moved/": Dir()})
    os.setxattr(up / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(Unsupported):
        overlay_diff(up)
    os.removexattr(up / "moved", "trusted.overlay.redirect")
    (up / "moved/meta").write_bytes(b"")
    os.truncate(up / "moved/meta", 4)  # what a metacopy upper file looks like: size, no data
    os.chmod(up / "moved/meta", 0o600)
    build_tree(low, {"moved/meta": File(b"data")})
    os.setxattr(up / "moved/meta", "trusted.overlay.metacopy", b"")
    with pytest.raises(Unsupported):
        overlay_diff(up)
    entries, data, _ = overlay_diff(up, low)
    assert contents(data)["moved/meta"] == b"data"
    assert {e.name: e.mode for e in entries}["moved/meta"] == 0o600
