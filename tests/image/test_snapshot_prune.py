"""Planning the prune of unpacked layers (lamina.image.snapshots): what images in the
store and images in use (given by the caller) need stays, with every parent of a live
active snapshot; stale unpacks go; the plan is what apply removes."""

from __future__ import annotations

from pathlib import Path

from helpers.images import make_random_image
from lamina.image.images import load_image
from lamina.image.snapshots import (
    LABEL_OWNER,
    apply_snapshot_prune,
    plan_snapshot_prune,
    unpack_to_snapshots,
)
from lamina.oci.ids import chain_ids
from lamina.snapshot.native import NativeSnapshotter
from lamina.store.local import LocalStore
from lamina.sysinfo import boot_id

DEAD = f"{boot_id()}:999999999:1"  # no such process


def _names(snap: NativeSnapshotter) -> set[str]:
    return {info.name for info in snap.walk()}


def test_plan_keeps_images_in_use_and_equals_what_apply_removes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    snap = NativeSnapshotter(store.root)
    named = load_image(store, make_random_image(store, "x/named:1", seed=1, layers=2).descriptor)
    used = load_image(store, make_random_image(store, "x/used:1", seed=2, layers=2).descriptor)
    loose = load_image(store, make_random_image(store, "x/loose:1", seed=3, layers=3).descriptor)
    for image in (named, used, loose):
        unpack_to_snapshots(store, image, snap)
    store.delete_ref("x/used:1")
    store.delete_ref("x/loose:1")
    chains = {
        "n": [str(c) for c in chain_ids(named.config.diff_ids)],
        "u": [str(c) for c in chain_ids(used.config.diff_ids)],
        "l": [str(c) for c in chain_ids(loose.config.diff_ids)],
    }
    # a killed unpack on the named image's top layer, and a container on the loose
    # image's middle layer (active, no owner label: a container's)
    snap.prepare("extract-dead", chains["n"][-1], labels={LABEL_OWNER: DEAD})
    snap.prepare("container-1", chains["l"][1])
    before = _names(snap)

    plan = plan_snapshot_prune(store, snap, configs=[used.config])
    assert plan.stale == ("extract-dead",)
    # only the loose image's top layer: its lower two hold the container up
    assert plan.committed == (chains["l"][2],)
    assert plan.bytes == sum(plan.usage.values()) and plan.bytes > 0
    assert _names(snap) == before  # planning removes nothing
    assert apply_snapshot_prune(snap, plan) == plan.names
    assert before - _names(snap) == set(plan.names)

    # without the image in use, and with the container gone: children before parents
    snap.remove("container-1")
    plan = plan_snapshot_prune(store, snap)
    assert plan.stale == ()
    assert set(plan.committed[:2]) == {chains["l"][1], chains["u"][1]}
    assert set(plan.committed[2:]) == {chains["l"][0], chains["u"][0]}
    assert apply_snapshot_prune(snap, plan) == plan.names
    assert _names(snap) == set(chains["n"])
