"""Unpack an image's layers into snapshots: one committed snapshot per ChainID, per host.

The snapshot of layer *i* is named by the ChainID of layers 0..i (image-spec config.md,
"Layer ChainID"), so a layer is unpacked once and shared by every image whose stack
starts the same way, and by every container of those images. Each missing layer is
applied into a fresh active snapshot ``extract-<random>-<chainid>`` on top of the one
below and then committed under its ChainID. Two processes unpacking the same image both
do the work; the second commit finds the name taken (AlreadyExists) and throws its copy
away, so the result is one snapshot per ChainID either way.

A process killed mid-unpack leaves its active ``extract-*`` snapshot behind (the
snapshotter cannot know it is dead: containers own active snapshots too). Each carries
an owner label (boot id, pid, process start time); :func:`remove_stale_extractions`
removes those whose owner is gone.

Pruning is planned, then applied (:func:`plan_snapshot_prune`,
:func:`apply_snapshot_prune`), so ``lamina prune --dry-run`` reports what ``lamina
prune`` removes. What containers need comes from the caller (images sit below the
runtime): their images' configs, and their active snapshots, which keep their parents.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lamina.errors import AlreadyExists, Conflict, InvalidFormat, LaminaError, NotFound
from lamina.oci.ids import chain_ids
from lamina.snapshot.api import Kind, Snapshotter
from lamina.sysinfo import owner_alive, owner_label

if TYPE_CHECKING:
    from lamina.image.images import Image
    from lamina.layers.api import Limits
    from lamina.oci.config import ImageConfig
    from lamina.store.api import Store

Progress = Callable[..., None]

EXTRACT_PREFIX = "extract-"
LABEL_OWNER = "lamina.unpack/owner"  # "<boot id>:<pid>:<start time>" of the unpacking process
LABEL_DIFF_ID = "lamina.unpack/diff-id"  # on committed layer snapshots: the layer's diff_id


def unpack_to_snapshots(
    store: Store,
    image: Image,
    snapshotter: Snapshotter,
    *,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> str:
    """Make sure every layer of ``image`` is a committed snapshot; returns the top ChainID.

    Layers already unpacked (by any image) are skipped. Each layer is verified (digest
    and diff_id) as it streams, within ``limits`` (default: ``DEFAULT_LIMITS`` of
    :mod:`lamina.layers.api`); a bad layer raises and leaves no snapshot for it or above
    it. ``progress(n)`` is called with each layer's compressed size as it is done or
    skipped. An image without layers raises InvalidFormat (there is no ChainID of nothing).
    """
    layers = image.manifest.layers
    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(layers):
        raise InvalidFormat(
            f"image {image.id} has {len(layers)} layers but {len(diff_ids)} diff_ids in its config"
        )
    if not layers:
        raise InvalidFormat(f"image {image.id} has no layers", hint="there is nothing to run")
    owner = owner_label()
    chains = chain_ids(diff_ids)
    parent: str | None = None
    for layer, diff_id, chain_id in zip(layers, diff_ids, chains, strict=True):
        name = str(chain_id)
        if not _exists(snapshotter, name):
            # Imported only when a layer must be unpacked: a warm `lamina run` (every
            # layer already a snapshot) starts without the decompression machinery.
            from lamina.image.layer_io import open_layer
            from lamina.layers.api import DEFAULT_LIMITS
            from lamina.layers.apply import apply_layer

            if limits is None:
                limits = DEFAULT_LIMITS

            key = f"{EXTRACT_PREFIX}{os.urandom(6).hex()}-{name}"
            snapshotter.prepare(key, parent, labels={LABEL_OWNER: owner})
            try:
                # The base layer goes in as a plain tree even for overlay: with nothing
                # below, its whiteouts hide nothing and must not show as 0/0 devices when
                # it is bind-mounted alone.
                mode: Literal["tree", "overlay"] = (
                    "overlay" if snapshotter.overlay and parent is not None else "tree"
                )
                stream = open_layer(store, layer, diff_id, limits)
                try:
                    apply_layer(stream, snapshotter.upper_dir(key), mode=mode, limits=limits)
                finally:
                    stream.close()
                try:
                    snapshotter.commit(name, key, labels={LABEL_DIFF_ID: str(diff_id)})
                except AlreadyExists:
                    snapshotter.remove(key)  # a concurrent unpack committed this layer first
            except BaseException:
                with suppress(LaminaError):
                    snapshotter.remove(key)
                raise
        parent = name
        if progress is not None:
            progress(layer.size)
    return str(chains[-1])


def _exists(snapshotter: Snapshotter, name: str) -> bool:
    try:
        info = snapshotter.stat(name)
    except NotFound:
        return False
    if info.kind is not Kind.COMMITTED:
        raise AlreadyExists(
            f"snapshot {name!r} exists but is {info.kind.value}",
            hint=f"remove it (it is not a layer lamina unpacked): {name}",
        )
    return True


# --------------------------------------------------------------------------- stale work


def remove_stale_extractions(snapshotter: Snapshotter) -> int:
    """Remove the active ``extract-*`` snapshots of unpacks whose process is gone;
    returns how many. Safe while other unpacks run (their owners are alive)."""
    removed = 0
    for info in list(snapshotter.walk()):
        if info.kind is not Kind.ACTIVE or not info.name.startswith(EXTRACT_PREFIX):
            continue
        owner = info.labels.get(LABEL_OWNER)
        if owner is None or owner_alive(owner):
            continue
        with suppress(NotFound):
            snapshotter.remove(info.name)
            removed += 1
    return removed


@dataclass(frozen=True, slots=True)
class SnapshotPrunePlan:
    """What a snapshot prune removes, in order: ``stale`` (active snapshots of unpacks
    and builds whose process is gone), then ``committed`` (layers and init snapshots
    nothing needs, children before parents); ``usage`` the disk use of each, in bytes."""

    stale: tuple[str, ...] = ()
    committed: tuple[str, ...] = ()
    usage: Mapping[str, int] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.stale + self.committed

    @property
    def bytes(self) -> int:
        return sum(self.usage.get(name, 0) for name in self.names)


def plan_snapshot_prune(
    store: Store,
    snapshotter: Snapshotter,
    *,
    configs: Iterable[ImageConfig] = (),
    owner_labels: Iterable[str] = (LABEL_OWNER,),
) -> SnapshotPrunePlan:
    """Plan the removal of committed snapshots that no image in the store and none of
    ``configs`` (images in use: the CLI passes the images of containers) needs and that
    nothing kept is stacked on, and of active snapshots carrying one of
    ``owner_labels`` whose owner process is gone. Removes nothing.

    Active snapshots and views of live owners (containers, running builds and unpacks)
    keep their whole parent chain.
    """
    from lamina.image.images import list_images

    needed: set[str] = set()
    for config in (*(image.config for _, image in list_images(store)), *configs):
        chains = chain_ids(config.diff_ids)
        needed.update(str(chain) for chain in chains)
        if chains:
            needed.add(f"{chains[-1]}-init")
    labels = tuple(owner_labels)
    infos = {info.name: info for info in snapshotter.walk()}
    stale = sorted(
        info.name
        for info in infos.values()
        if info.kind is not Kind.COMMITTED and _owner_gone(info.labels, labels)
    )
    keep = {name for name in needed if name in infos}
    keep.update(n for n, i in infos.items() if i.kind is not Kind.COMMITTED and n not in stale)
    for name in list(keep):
        parent = infos[name].parent
        while parent is not None and parent in infos and parent not in keep:
            keep.add(parent)
            parent = infos[parent].parent
        # (a parent already kept has its own chain kept: the loop stops there)

    def depth(name: str) -> int:
        n, parent = 0, infos[name].parent
        while parent is not None and parent in infos:
            n, parent = n + 1, infos[parent].parent
        return n

    committed = sorted(
        (n for n, i in infos.items() if i.kind is Kind.COMMITTED and n not in keep),
        key=lambda n: (-depth(n), n),
    )
    usage: dict[str, int] = {}
    for name in (*stale, *committed):
        with suppress(NotFound):
            usage[name] = snapshotter.usage(name).size
    return SnapshotPrunePlan(tuple(stale), tuple(committed), usage)


def _owner_gone(labels: Mapping[str, str], keys: tuple[str, ...]) -> bool:
    owners = [labels[key] for key in keys if key in labels]
    return bool(owners) and not any(owner_alive(owner) for owner in owners)


def apply_snapshot_prune(snapshotter: Snapshotter, plan: SnapshotPrunePlan) -> tuple[str, ...]:
    """Remove what ``plan`` lists (those gone already are skipped); returns the names
    removed. A snapshot that gained a child since the plan stays (Conflict)."""
    removed: list[str] = []
    for name in plan.names:
        with suppress(NotFound, Conflict):
            snapshotter.remove(name)
            removed.append(name)
    return tuple(removed)


def prune_snapshots(store: Store, snapshotter: Snapshotter) -> int:
    """Remove committed snapshots that no image in the store needs (layers of images
    that are gone, and their init snapshots) and that nothing is stacked on, and stale
    unpacks; returns how many (:func:`plan_snapshot_prune`, then apply)."""
    return len(apply_snapshot_prune(snapshotter, plan_snapshot_prune(store, snapshotter)))
