"""lamina.snapshot.raw_metadata (the fast path's raw-metadata snapshots) and the
OverlaySnapshotter read and clean each other's work, in the same file format."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lamina.errors import AlreadyExists, Conflict, NotFound
from lamina.snapshot.api import Kind
from lamina.snapshot.metadata import MetaFile, _serialize
from lamina.snapshot.mount import mount_overlay, unmount
from lamina.snapshot.overlay import OverlaySnapshotter
from lamina.snapshot.raw_metadata import ChainChanged, prepare_active, remove_active


def _committed(snap: OverlaySnapshotter, name: str, parent: str | None, content: str) -> None:
    key = f"k-{name}"
    snap.prepare(key, parent=parent)
    Path(snap.upper_dir(key), f"{name}.txt").write_text(content)
    snap.commit(name, key)


def _ids(snap: OverlaySnapshotter, *names: str) -> list[int]:
    return [int(Path(snap.path(n)).parent.name) for n in names]


@pytest.fixture
def snap(tmp_path: Path) -> OverlaySnapshotter:
    s = OverlaySnapshotter(str(tmp_path / "root"))
    _committed(s, "base", None, "base")
    _committed(s, "top", "base", "top")
    return s


def test_prepare_is_what_the_snapshotter_would_make(snap: OverlaySnapshotter) -> None:
    chain = _ids(snap, "top", "base")
    sid = prepare_active(snap.root, "c1", "top", chain)
    info = snap.stat("c1")
    assert (info.kind, info.parent, dict(info.labels)) == (Kind.ACTIVE, "top", {})
    assert snap.upper_dir("c1") == os.path.join(snap.root, str(sid), "fs")
    assert stat.S_IMODE(os.stat(snap.upper_dir("c1")).st_mode) == 0o755
    assert snap.parents("c1") == ["top", "base"]
    # the document is what MetaFile writes (compact instead of indented)
    raw = (Path(snap.root) / "metadata.json").read_bytes()
    assert json.loads(_serialize(MetaFile(snap.root).read())) == json.loads(raw)
    # ids keep counting across both writers
    snap.prepare("c2", parent="top")
    assert int(Path(snap.upper_dir("c2")).parent.name) > sid
    snap.remove("c1")  # the snapshotter removes what direct made
    assert not (Path(snap.root) / str(sid)).exists()
    remove_active(snap.root, "c2")  # and direct removes what the snapshotter made
    assert {i.name for i in snap.walk()} == {"base", "top"}
    assert sorted(os.listdir(snap.root)) == sorted(
        ["metadata.json", "metadata.lock", *map(str, chain)]
    )


def test_mount_overlay_stacks_the_chain(snap: OverlaySnapshotter, tmp_path: Path) -> None:
    chain = _ids(snap, "top", "base")
    sid = prepare_active(snap.root, "c", "top", chain)
    target = tmp_path / "merged"
    target.mkdir()
    upper = Path(snap.root, str(sid), "fs")
    mount_overlay(
        str(target),
        [os.path.join(snap.root, str(i), "fs") for i in chain],
        (f"upperdir={upper}", f"workdir={Path(snap.root, str(sid), 'work')}", "index=off"),
    )
    try:
        assert (target / "base.txt").read_text() == "base"
        assert (target / "top.txt").read_text() == "top"
        (target / "base.txt").unlink()
        (target / "new.txt").write_text("new")
    finally:
        unmount(str(target))
    assert (upper / "new.txt").read_text() == "new"
    assert stat.S_ISCHR(os.lstat(upper / "base.txt").st_mode)  # the whiteout
    assert (Path(snap.path("base")) / "base.txt").read_text() == "base"  # lower untouched
    remove_active(snap.root, "c")


def test_a_changed_chain_is_refused_before_anything_is_made(snap: OverlaySnapshotter) -> None:
    before = sorted(os.listdir(snap.root))
    with pytest.raises(ChainChanged):
        prepare_active(snap.root, "c", "top", _ids(snap, "top"))  # base missing
    with pytest.raises(ChainChanged):
        prepare_active(snap.root, "c", "gone", [])
    snap.prepare("active", parent="top")
    with pytest.raises(ChainChanged):  # an active snapshot is no parent
        prepare_active(snap.root, "c", "active", [99])
    snap.remove("active")
    assert sorted(os.listdir(snap.root)) == before
    with pytest.raises(AlreadyExists):
        prepare_active(snap.root, "top", "base", _ids(snap, "base"))
    assert sorted(os.listdir(snap.root)) == before


def test_remove_refuses_what_is_not_a_free_active_snapshot(snap: OverlaySnapshotter) -> None:
    with pytest.raises(NotFound):
        remove_active(snap.root, "nothing")
    with pytest.raises(Conflict):
        remove_active(snap.root, "top")  # committed
    assert {i.name for i in snap.walk()} == {"base", "top"}
