"""Round trips (issue 2 acceptance): for random trees A and B, applying diff(A, B) on
top of A yields B exactly: contents, modes (setuid too), owners, symlinks, hardlink
groups, xattrs and mtimes.

Three ways through:

1. diff_trees(A, B) applied in tree mode onto a copy of A;
2. the same layer applied in overlay mode into an empty upper dir, mounted over A;
3. B made by hand in an overlay mount over A (removing, rewriting, re-creating
   directories, which makes opaque dirs and whiteouts), the upper dir turned into a
   layer by diff_overlay_upper, and that layer applied both ways again.
"""

from __future__ import annotations

import io
import os
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.tree import (
    Dir,
    Fifo,
    File,
    Hardlink,
    Node,
    Symlink,
    assert_trees_equal,
    build_tree,
    overlay_mount,
    spec_snapshot,
    sync_tree,
)
from lamina.layers.apply import apply_layer
from lamina.layers.diff import diff_overlay_upper, diff_trees
from lamina.layers.tar import TarWriter

pytestmark = pytest.mark.root

NAMES = ["a", "b", "c", "a.b", "a-b", "é"]
DATA = [b"", b"x", b"hello", b"HELLO", b"\0" * 9000 + b"end"]
FILE_MODES = [0o644, 0o755, 0o4755, 0o2750, 0o600, 0o1644]
DIR_MODES = [0o755, 0o700, 0o1777, 0o2755]
OWNERS = [(0, 0), (1000, 1000), (0, 5)]
XATTRS: list[dict[str, bytes]] = [{}, {}, {"user.a": b"1"}, {"user.a": b"2", "user.b": b""}]
TARGETS = ["a", "../b", "/etc/passwd", "../../../..", "c/d"]
T0 = 1_500_000_000

Spec = dict[str, Node]


def _mtime(*parts: object) -> int:
    # Derived from the content: equal nodes get equal mtimes, so an unchanged path is
    # really unchanged; whole seconds, as the tar writer stores them.
    return (T0 + zlib.crc32(repr(parts).encode()) % 10**6) * 10**9


@st.composite
def nodes(draw: st.DrawFn, path: str, allow_dir: bool) -> Node:
    kinds = ["file", "file", "file", "symlink", "fifo"] + (["dir", "dir"] if allow_dir else [])
    kind = draw(st.sampled_from(kinds))
    uid, gid = draw(st.sampled_from(OWNERS))
    if kind == "file":
        data = draw(st.sampled_from(DATA))
        mode = draw(st.sampled_from(FILE_MODES))
        xattrs = draw(st.sampled_from(XATTRS))
        mtime = _mtime(path, data, mode, uid, gid, sorted(xattrs.items()))
        return File(data, mode=mode, uid=uid, gid=gid, xattrs=xattrs, mtime_ns=mtime)
    if kind == "dir":
        mode = draw(st.sampled_from(DIR_MODES))
        xattrs = draw(st.sampled_from(XATTRS))
        return Dir(mode=mode, uid=uid, gid=gid, xattrs=xattrs, mtime_ns=_mtime(path, mode, uid))
    if kind == "symlink":
        target = draw(st.sampled_from(TARGETS))
        return Symlink(target, uid=uid, gid=gid, mtime_ns=_mtime(path, target, uid, gid))
    mode = draw(st.sampled_from([0o644, 0o600]))
    return Fifo(mode=mode, uid=uid, gid=gid, mtime_ns=_mtime(path, "fifo", mode, uid, gid))


def _dirs(spec: Spec) -> list[str]:
    return ["", *sorted(p for p, n in spec.items() if isinstance(n, Dir))]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@st.composite
def trees(draw: st.DrawFn) -> Spec:
    spec: Spec = {}

    def fill(prefix: str, depth: int) -> None:
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4)):
            path = _join(prefix, name)
            spec[path] = draw(nodes(path, allow_dir=depth > 0))
            if isinstance(spec[path], Dir):
                fill(path, depth - 1)

    fill("", 2)
    for _ in range(draw(st.integers(0, 2))):
        _add_link(draw, spec)
    return spec


def _add_link(draw: st.DrawFn, spec: Spec) -> None:
    files = sorted(p for p, n in spec.items() if isinstance(n, File))
    if not files:
        return
    target = draw(st.sampled_from(files))
    path = _join(draw(st.sampled_from(_dirs(spec))), draw(st.sampled_from(NAMES)))
    if path not in spec:
        spec[path] = Hardlink(target)


def _delete(spec: Spec, path: str) -> None:
    """Remove path (and below); a removed file's other names keep the inode alive."""
    for p in [p for p in spec if p == path or p.startswith(path + "/")]:
        node = spec.pop(p)
        if isinstance(node, File):
            heirs = sorted(q for q, n in spec.items() if n == Hardlink(p))
            if heirs:
                spec[heirs[0]] = node
                for q in heirs[1:]:
                    spec[q] = Hardlink(heirs[0])


@st.composite
def tree_pairs(draw: st.DrawFn) -> tuple[Spec, Spec]:
    a = draw(trees())
    b = dict(a)
    for _ in range(draw(st.integers(0, 7))):
        op = draw(st.sampled_from(["delete", "replace", "modify", "add", "link", "unlink", "dir"]))
        paths = sorted(b)
        if op == "add" or not paths:
            path = _join(draw(st.sampled_from(_dirs(b))), draw(st.sampled_from(NAMES)))
            if path not in b:
                b[path] = draw(nodes(path, allow_dir=path.count("/") < 2))
            continue
        path = draw(st.sampled_from(paths))
        node = b[path]
        if op == "delete":
            _delete(b, path)
        elif op == "replace":
            _delete(b, path)
            b[path] = draw(nodes(path, allow_dir=path.count("/") < 2))
        elif op == "modify" and isinstance(node, File):
            # in place: every name of the inode sees the change
            new = draw(nodes(path, allow_dir=False))
            if isinstance(new, File):
                b[path] = new
        elif op == "link":
            _add_link(draw, b)
        elif op == "unlink" and isinstance(node, Hardlink):
            b[path] = b[node.target]
        elif op == "dir" and isinstance(node, Dir):
            b[path] = draw(nodes(path, allow_dir=True).filter(lambda n: isinstance(n, Dir)))
    return a, b


def _layer_of_trees(lower: Path, upper: Path) -> bytes:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    diff_trees(lower, upper, writer)
    writer.close()
    return buf.getvalue()


def _layer_of_upper(upper: Path) -> bytes:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    diff_overlay_upper(upper, writer)
    writer.close()
    return buf.getvalue()


def _check_both_ways(tmp: Path, tag: str, a: Spec, a_dir: Path, layer: bytes, want: object) -> None:
    tree = tmp / f"{tag}-tree"
    build_tree(tree, a)
    apply_layer(io.BytesIO(layer), tree)
    assert_trees_equal(tree, want, mtimes=True)  # type: ignore[arg-type]

    upper = tmp / f"{tag}-upper"
    upper.mkdir()
    apply_layer(io.BytesIO(layer), upper, mode="overlay")
    with overlay_mount([a_dir], upper, tmp / f"{tag}-work", tmp / f"{tag}-merged") as merged:
        assert_trees_equal(merged, want, mtimes=True)  # type: ignore[arg-type]


SETTINGS = settings(
    max_examples=int(os.environ.get("LAMINA_ROUNDTRIP_EXAMPLES", "35")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(pair=tree_pairs())
def test_diff_trees_roundtrip(pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    want = spec_snapshot(b)
    with tempfile.TemporaryDirectory(prefix="lamina-rt-") as name:
        tmp = Path(name)
        a_dir, b_dir = tmp / "A", tmp / "B"
        build_tree(a_dir, a)
        build_tree(b_dir, b)
        assert_trees_equal(b_dir, want, mtimes=True)  # the helpers agree with themselves
        layer = _layer_of_trees(a_dir, b_dir)
        _check_both_ways(tmp, "diff", a, a_dir, layer, want)


@SETTINGS
@given(pair=tree_pairs(), data=st.data())
def test_overlay_upper_roundtrip(pair: tuple[Spec, Spec], data: st.DataObject) -> None:
    a, b = pair
    both = sorted(p for p in a if isinstance(a[p], Dir) and isinstance(b.get(p), Dir))
    recreate = data.draw(st.lists(st.sampled_from(both), unique=True, max_size=2)) if both else []
    want = spec_snapshot(b)
    with tempfile.TemporaryDirectory(prefix="lamina-rt-") as name:
        tmp = Path(name)
        a_dir = tmp / "A"
        build_tree(a_dir, a)
        with overlay_mount([a_dir], tmp / "U", tmp / "W", tmp / "M") as merged:
            sync_tree(merged, b, recreate=recreate)
            assert_trees_equal(merged, want, mtimes=True)
        layer = _layer_of_upper(tmp / "U")
        _check_both_ways(tmp, "upper", a, a_dir, layer, want)


def test_full_layer_of_a_tree(tmp_path: Path) -> None:
    spec: Spec = {
        "bin/busybox": File(b"\x7fELF" + bytes(70000), mode=0o4755),
        "bin/sh": Hardlink("bin/busybox"),
        "etc/": Dir(mode=0o750, gid=42),
        "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\n"),
        "etc/mtab": Symlink("/proc/mounts"),
        "run/fifo": Fifo(),
    }
    build_tree(tmp_path / "src", spec)
    buf = io.BytesIO()
    writer = TarWriter(buf)
    stats = diff_trees(None, tmp_path / "src", writer)
    writer.close()
    assert (stats.entries, stats.files, stats.whiteouts) == (8, 2, 0)
    (tmp_path / "dst").mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), tmp_path / "dst")
    assert_trees_equal(tmp_path / "dst", spec_snapshot(spec), mtimes=True)
