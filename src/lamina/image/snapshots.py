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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Literal

from lamina.errors import AlreadyExists, InvalidFormat, LaminaError, NotFound
from lamina.oci.ids import chain_ids
from lamina.snapshot.api import Kind, Snapshotter
from lamina.sysinfo import owner_alive, owner_label

if TYPE_CHECKING:
    from lamina.image.images import Image
    from lamina.layers.api import Limits
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


def prune_snapshots(store: Store, snapshotter: Snapshotter) -> int:
    """Remove committed snapshots that no image in the store needs (layers of images
    that are gone, and their init snapshots) and that nothing is stacked on; returns
    how many. Snapshots of running or stopped containers keep their parents."""
    from lamina.image.images import list_images

    needed: set[str] = set()
    for _, image in list_images(store):
        for chain in chain_ids(image.config.diff_ids):
            needed.add(str(chain))
        if image.config.diff_ids:
            needed.add(f"{chain_ids(image.config.diff_ids)[-1]}-init")
    removed = 0
    while True:
        infos = list(snapshotter.walk())
        parents = {info.parent for info in infos if info.parent}
        victims = [
            info.name
            for info in infos
            if info.kind is Kind.COMMITTED and info.name not in needed and info.name not in parents
        ]
        if not victims:
            return removed
        for name in victims:
            with suppress(NotFound):
                snapshotter.remove(name)
                removed += 1
