"""unpack_to_snapshots: real images into both snapshotters, compared with a plain unpack;
layer sharing by ChainID; racing unpacks in two processes; bad layers; killed unpacks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.images import import_busybox, make_random_image, tree_contents
from helpers.tree import assert_trees_equal
from lamina.errors import AlreadyExists, LaminaError
from lamina.image.images import Image, load_image
from lamina.image.importer import build_image
from lamina.image.layer_io import write_layer
from lamina.image.snapshots import (
    EXTRACT_PREFIX,
    LABEL_DIFF_ID,
    remove_stale_extractions,
    unpack_to_snapshots,
)
from lamina.image.unpack import unpack_image
from lamina.layers.api import Entry, EntryType
from lamina.layers.tar import TarWriter
from lamina.oci.config import History, ImageConfig
from lamina.oci.ids import chain_ids
from lamina.oci.platform import Platform
from lamina.snapshot.api import Kind
from lamina.snapshot.base import DirSnapshotter
from lamina.store.local import LocalStore

pytestmark = pytest.mark.root
Mounted = Callable[..., contextlib.AbstractContextManager[Path]]
Spawn = Callable[..., subprocess.Popen[str]]


def _layer_dirs(s: DirSnapshotter) -> int:
    return sum(1 for n in os.listdir(s.root) if n.isdigit())


def _random(store: LocalStore, name: str = "example.com/random:1", **kw: Any) -> Image:
    return load_image(store, make_random_image(store, name, **kw).descriptor)


def _check_against_plain_unpack(
    store: LocalStore, image: Image, s: DirSnapshotter, top: str, mounted: Mounted, tmp: Path
) -> None:
    plain = tmp / "plain"
    unpack_image(store, image, str(plain))
    with mounted(s.view(f"check-{time.monotonic_ns()}", top)) as root:
        assert_trees_equal(plain, root)


def test_random_image_matches_plain_unpack(
    store: LocalStore, snapshotter: DirSnapshotter, mounted: Mounted, tmp_path: Path
) -> None:
    made = make_random_image(store, "example.com/random:1", seed=7, layers=4, files_per_layer=30)
    image = load_image(store, made.descriptor)
    seen: list[int] = []
    top = unpack_to_snapshots(store, image, snapshotter, progress=seen.append)
    chains = [str(c) for c in chain_ids(image.config.diff_ids)]
    assert top == chains[-1]
    assert seen == [layer.size for layer in image.manifest.layers]
    # one committed snapshot per ChainID, each on the one below, and nothing else
    infos = {i.name: i for i in snapshotter.walk()}
    assert set(infos) == set(chains)
    for i, chain in enumerate(chains):
        assert infos[chain].kind is Kind.COMMITTED
        assert infos[chain].parent == (chains[i - 1] if i else None)
        assert infos[chain].labels[LABEL_DIFF_ID] == str(image.config.diff_ids[i])
    assert _layer_dirs(snapshotter) == 4
    _check_against_plain_unpack(store, image, snapshotter, top, mounted, tmp_path)
    with mounted(snapshotter.view("v", top)) as root:
        assert tree_contents(str(root)) == made.expected
    if snapshotter.overlay:
        # each layer's snapshot holds only that layer: whiteouts as overlay char 0/0 nodes
        whiteouts = 0
        for chain in chains[1:]:
            for dirpath, _, files in os.walk(snapshotter.path(chain)):
                for f in files:
                    st = os.lstat(os.path.join(dirpath, f))
                    whiteouts += st.st_rdev == 0 and (st.st_mode & 0o170000) == 0o020000
        assert whiteouts > 0
    # unpacking again does nothing, but still reports every layer
    seen.clear()
    assert unpack_to_snapshots(store, image, snapshotter, progress=seen.append) == top
    assert len(seen) == 4 and _layer_dirs(snapshotter) == 4 + 2  # + the two views


def test_busybox_matches_plain_unpack(
    store: LocalStore,
    snapshotter: DirSnapshotter,
    mounted: Mounted,
    tmp_path: Path,
    busybox_rootfs: Path,
) -> None:
    image = load_image(store, import_busybox(store, str(busybox_rootfs)))
    top = unpack_to_snapshots(store, image, snapshotter)
    _check_against_plain_unpack(store, image, snapshotter, top, mounted, tmp_path)
    # and a container on top runs its copy-on-write without touching the layer
    with mounted(snapshotter.prepare("ctr", top)) as root:
        (root / "etc" / "passwd").write_text("changed\n")
    assert Path(snapshotter.path(top), "etc", "passwd").read_text() != "changed\n"


def test_images_sharing_base_layers_share_snapshots(
    store: LocalStore, snapshotter: DirSnapshotter, mounted: Mounted, tmp_path: Path
) -> None:
    # the same seed makes the same first layers: B is A plus two layers
    a = _random(store, "example.com/a:1", seed=6, layers=2)
    b = _random(store, "example.com/b:1", seed=6, layers=4)
    assert a.config.diff_ids == b.config.diff_ids[:2]
    top_a = unpack_to_snapshots(store, a, snapshotter)
    assert _layer_dirs(snapshotter) == 2
    top_b = unpack_to_snapshots(store, b, snapshotter)
    assert _layer_dirs(snapshotter) == 4  # not 6
    assert snapshotter.parents(top_b)[1] == top_a
    _check_against_plain_unpack(store, b, snapshotter, top_b, mounted, tmp_path)


def test_a_bad_layer_leaves_no_snapshot_for_it_or_above(
    store: LocalStore, snapshotter: DirSnapshotter
) -> None:
    image = _random(store, seed=5, layers=3, files_per_layer=40)
    victim = image.manifest.layers[1]
    path = store.blob_path(victim.digest)
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[-12] ^= 0xFF  # in the last deflate block or the gzip trailer
    Path(path).write_bytes(bytes(data))
    with pytest.raises(LaminaError):
        unpack_to_snapshots(store, image, snapshotter)
    chains = [str(c) for c in chain_ids(image.config.diff_ids)]
    assert [i.name for i in snapshotter.walk()] == [chains[0]]
    assert _layer_dirs(snapshotter) == 1
    assert [n for n in os.listdir(snapshotter.root) if n.startswith("tmp-")] == []


class _LosesTheRace:
    """A real snapshotter whose first commit comes just after another unpack of the
    same image committed everything: the interleaving of two racing processes."""

    def __init__(self, inner: DirSnapshotter, rival: Callable[[], object]) -> None:
        self._inner = inner
        self._rival: Callable[[], object] | None = rival

    def commit(self, name: str, key: str, labels: Any = None) -> None:
        if self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        self._inner.commit(name, key, labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_losing_a_commit_race_keeps_the_winners_snapshot(
    store: LocalStore, snapshotter: DirSnapshotter, lamina_root: Path
) -> None:
    image = _random(store, seed=12, layers=3)
    other = type(snapshotter)(str(lamina_root))
    racer = _LosesTheRace(snapshotter, lambda: unpack_to_snapshots(store, image, other))
    top = unpack_to_snapshots(store, image, racer)  # type: ignore[arg-type]
    chains = [str(c) for c in chain_ids(image.config.diff_ids)]
    assert top == chains[-1]
    assert sorted(i.name for i in snapshotter.walk()) == sorted(chains)
    assert _layer_dirs(snapshotter) == 3  # the loser's copy of layer 0 is gone


def test_an_existing_non_committed_name_is_refused(
    store: LocalStore, snapshotter: DirSnapshotter
) -> None:
    image = _random(store, seed=1, layers=1)
    snapshotter.prepare(str(chain_ids(image.config.diff_ids)[0]))
    with pytest.raises(AlreadyExists, match="active"):
        unpack_to_snapshots(store, image, snapshotter)


UNPACKER = """
    import os, sys, time
    from lamina.image.images import resolve
    from lamina.image.snapshots import unpack_to_snapshots
    from lamina.snapshot.native import NativeSnapshotter
    from lamina.snapshot.overlay import OverlaySnapshotter
    from lamina.store.local import LocalStore
    kind, store_root, root, ref, go = sys.argv[1:6]
    cls = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}[kind]
    store, s = LocalStore(store_root), cls(root)
    image = resolve(store, ref)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    print(unpack_to_snapshots(store, image, s), flush=True)
"""


def test_two_processes_unpacking_one_image(
    store: LocalStore, snapshotter: DirSnapshotter, lamina_root: Path, spawn: Spawn, tmp_path: Path
) -> None:
    ref = "example.com/race:1"
    image = _random(store, ref, seed=2, layers=4, files_per_layer=150, max_file_size=32768)
    kind = "overlay" if snapshotter.overlay else "native"
    go = tmp_path / "go"
    args = (kind, str(tmp_path / "store"), str(lamina_root), ref, str(go))
    procs = [spawn(UNPACKER, *args) for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    tops = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        tops.append(out.strip())
    chains = [str(c) for c in chain_ids(image.config.diff_ids)]
    assert tops == [chains[-1]] * 2
    assert sorted(i.name for i in snapshotter.walk()) == sorted(chains)
    assert _layer_dirs(snapshotter) == 4
    assert snapshotter.cleanup() == 0


def test_killed_unpack_is_cleaned_up(
    store: LocalStore, snapshotter: DirSnapshotter, lamina_root: Path, spawn: Spawn, tmp_path: Path
) -> None:
    ref = "example.com/big:1"
    image = _random(store, ref, seed=4, layers=2, files_per_layer=400, max_file_size=200_000)
    kind = "overlay" if snapshotter.overlay else "native"
    go = tmp_path / "go"
    go.touch()
    proc = spawn(UNPACKER, kind, str(tmp_path / "store"), str(lamina_root), ref, str(go))
    meta = Path(snapshotter.root, "metadata.json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if meta.exists() and EXTRACT_PREFIX in meta.read_text():
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(meta.read_text())["snapshots"]
    stale = [k for k in state if k.startswith(EXTRACT_PREFIX)]
    assert len(stale) == 1, state
    assert remove_stale_extractions(snapshotter) == 1
    assert not any(i.name.startswith(EXTRACT_PREFIX) for i in snapshotter.walk())
    snapshotter.cleanup()
    top = unpack_to_snapshots(store, image, snapshotter)
    assert top == str(chain_ids(image.config.diff_ids)[-1])
    assert _layer_dirs(snapshotter) == 2


def test_live_extractions_are_not_stale(snapshotter: DirSnapshotter, spawn: Spawn) -> None:
    root = os.path.dirname(snapshotter.root)
    kind = "overlay" if snapshotter.overlay else "native"
    proc = spawn(
        """
        import sys
        from lamina.image.snapshots import EXTRACT_PREFIX, LABEL_OWNER
        from lamina.sysinfo import owner_label
        from lamina.snapshot.native import NativeSnapshotter
        from lamina.snapshot.overlay import OverlaySnapshotter
        cls = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}[sys.argv[1]]
        cls(sys.argv[2]).prepare(EXTRACT_PREFIX + "x", labels={LABEL_OWNER: owner_label()})
        print("ready", flush=True)
        sys.stdin.read()
        """,
        kind,
        root,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    snapshotter.prepare(EXTRACT_PREFIX + "no-owner")  # not lamina's: never touched
    assert remove_stale_extractions(snapshotter) == 0
    proc.communicate("", timeout=30)
    assert remove_stale_extractions(snapshotter) == 1
    assert [i.name for i in snapshotter.walk()] == [EXTRACT_PREFIX + "no-owner"]


def _image_of(store: LocalStore, layers: list[list[tuple[Entry, bytes]]]) -> Image:
    written = []
    config = ImageConfig.new(Platform.host(), created="2023-11-14T22:13:20Z")
    for entries in layers:

        def produce(w: TarWriter, entries: list[tuple[Entry, bytes]] = entries) -> None:
            for entry, data in entries:
                w.add_bytes(entry, data)

        with store.lease():
            lw = write_layer(store, produce)
        written.append(lw)
        config = config.with_layer(lw.diff_id, History(created_by="test"))
    with store.lease():
        desc, _ = build_image(store, [w.descriptor for w in written], config, "example.com/hand:1")
    return load_image(store, desc)


def _f(name: str, data: bytes = b"x") -> tuple[Entry, bytes]:
    return Entry(name, EntryType.FILE, mode=0o644, size=len(data)), data


def _d(name: str) -> tuple[Entry, bytes]:
    return Entry(name, EntryType.DIR, mode=0o755), b""


def test_whiteouts_and_opaque_dirs(
    store: LocalStore, snapshotter: DirSnapshotter, mounted: Mounted, tmp_path: Path
) -> None:
    image = _image_of(
        store,
        [
            # whiteouts in a base layer hide nothing (and must not show as devices)
            [
                _f(".wh.ghost"),
                _d("a"),
                _f("a/old"),
                _d("b"),
                _f("b/old"),
                _f("c"),
                _d("keep"),
                _f("keep/f"),
                _f("keep/.wh..wh..opq"),
            ],
            [_f("a/.wh.old"), _d("b"), _f("b/.wh..wh..opq"), _f("b/new"), _f(".wh.c")],
        ],
    )
    top = unpack_to_snapshots(store, image, snapshotter)
    _check_against_plain_unpack(store, image, snapshotter, top, mounted, tmp_path)
    base = snapshotter.parents(top)[0]
    with mounted(snapshotter.view("base-view", base)) as root:
        assert sorted(os.listdir(root)) == ["a", "b", "c", "keep"]
        assert os.listxattr(root / "keep") == []
    with mounted(snapshotter.view("v", top)) as root:
        assert sorted(os.listdir(root)) == ["a", "b", "keep"]
        assert os.listdir(root / "a") == [] and os.listdir(root / "b") == ["new"]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("recreated-dir", id="whiteout-then-dir-in-one-layer"),
        pytest.param("nested-whiteout", id="whiteout-below-a-whiteout"),
    ],
)
def test_whiteout_and_new_content_in_one_layer(
    store: LocalStore,
    snapshotter: DirSnapshotter,
    mounted: Mounted,
    tmp_path: Path,
    case: str,
    request: pytest.FixtureRequest,
) -> None:
    """image-spec layer.md: a whiteout hides the layers below only; what its own layer
    adds at that path stays. So ``.wh.d`` + ``d/`` + ``d/new`` over a lower ``d/old``
    must give ``d/{new}``: in an overlay upper dir, ``d`` has to be an opaque directory."""
    base = [_d("d"), _d("d/sub"), _f("d/old"), _f("d/sub/f")]
    if case == "recreated-dir":
        top_layer = [_f(".wh.d"), _d("d"), _f("d/new")]
        want = ["new"]
    else:
        top_layer = [_f(".wh.d"), _f("d/sub/.wh.f")]
        want = None
    image = _image_of(store, [base, top_layer])
    top = unpack_to_snapshots(store, image, snapshotter)
    _check_against_plain_unpack(store, image, snapshotter, top, mounted, tmp_path)
    with mounted(snapshotter.view("v", top)) as root:
        if want is None:
            assert not (root / "d").exists()
        else:
            assert sorted(os.listdir(root / "d")) == want
