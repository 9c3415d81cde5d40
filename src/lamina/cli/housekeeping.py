"""What ``lamina rmi``, ``lamina prune`` and ``lamina builder prune`` must not take, and
the one plan each carries out.

The rows below cannot see each other: the store knows no containers, images know no
build cache. So the roots are gathered here, from the container records (runtime) and
the build cache records (builder), and passed down as data (:class:`GCRoots`, the
configs of images in use). Every sweep is planned first and then applied, inside one
store gc lock: no lease (an import, a pull, a build in progress) is held anywhere
meanwhile, and a dry run reports the very plan a real run removes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.errors import Conflict, InUse, InvalidReference, LaminaError
from lamina.image import images as img
from lamina.oci.digest import Digest
from lamina.store.api import BlobInfo, GCRoots

if TYPE_CHECKING:
    from lamina.oci.config import ImageConfig
    from lamina.oci.descriptor import Descriptor
    from lamina.runtime.records.containers import Container
    from lamina.snapshot.api import Snapshotter
    from lamina.store.local import LocalStore


# --------------------------------------------------------------------------- in use


def containers_by_image(root: str) -> dict[Digest, list[Container]]:
    """Container records (running, stopped or created) by the image ID they run."""
    from lamina.runtime.records.containers import containers_by_image as by_text

    out: dict[Digest, list[Container]] = {}
    for text, containers in by_text(root).items():
        try:
            out[Digest.parse(text)] = containers
        except LaminaError:
            continue  # a record without a usable image ID keeps no image
    return out


def _why(containers: list[Container]) -> str:
    c = containers[0]
    more = f" and {len(containers) - 1} more" if len(containers) > 1 else ""
    return f"container {c.short_id} ({c.name}){more}"


def _configs(store: LocalStore, image_ids: dict[Digest, str]) -> list[ImageConfig]:
    from lamina.oci.config import ImageConfig

    out = []
    for digest in image_ids:
        try:
            out.append(ImageConfig.parse(store.read_blob(digest)))
        except LaminaError:
            continue  # gone or unreadable: its snapshots are kept by the container's own
    return out


# --------------------------------------------------------------------------- rmi


@dataclass(frozen=True, slots=True)
class Untag:
    """One REF of ``lamina rmi``: the names it removes, and the containers that still
    use the image after that (only with ``--force``)."""

    ref: str
    image_id: Digest | None
    names: tuple[str, ...]
    containers: tuple[Container, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "id": None if self.image_id is None else str(self.image_id),
            "untagged": list(self.names),
            "containers": [c.id for c in self.containers],
        }


def _still_named(store: LocalStore, refs: dict[str, Descriptor], image: img.Image) -> bool:
    """Whether a name in ``refs`` still gives ``image`` (the same manifest, or another
    one with the same config: the same image ID)."""
    if any(d.digest == image.descriptor.digest for d in refs.values()):
        return True
    for desc in refs.values():
        try:
            if img.load_image(store, desc).id == image.id:
                return True
        except LaminaError:
            continue
    return False


def plan_rmi(store: LocalStore, refs: list[str], *, force: bool) -> list[Untag]:
    """Check every REF before any name goes (so a refused ``rmi`` untags nothing).

    As Docker: removing a name is refused (InUse) when it is the image's last one and a
    container, running or stopped, uses the image; ``force`` untags anyway (gc keeps
    what the container needs). An image ID with several names needs ``force`` too.
    """
    all_refs = store.list_refs()
    remaining = dict(all_refs)
    users: dict[Digest, list[Container]] | None = None
    plan: list[Untag] = []
    for text in refs:
        try:
            key: str | None = img.normalize(text)
        except InvalidReference:
            key = None
        if key is not None and key in all_refs and key not in remaining:
            continue  # named twice on one command line
        image: img.Image | None
        try:
            image = img.resolve(store, text)
        except LaminaError:
            if key is None or key not in remaining:
                raise
            image = None  # a name whose image cannot be read (no container can run it)
        if key is not None and key in remaining:
            names: tuple[str, ...] = (key,)
        else:
            assert image is not None
            names = tuple(n for n in image.names if n in remaining)
            if len(names) > 1 and not force:
                raise Conflict(
                    f"image {image.id.encoded[:12]} has several names: {', '.join(names)}",
                    hint="remove them by name, or use -f to remove them all",
                )
        for name in names:
            remaining.pop(name, None)
        using: list[Container] = []
        if image is not None:
            if users is None:
                users = containers_by_image(store.root)
            using = users.get(image.id, [])
            if using and _still_named(store, remaining, image):
                using = []
        if image is not None and using and not force:
            c = using[0]
            raise InUse(
                f"unable to remove repository reference {text!r} (must force): "
                f"{_why(using)} is using its referenced image {image.id.encoded[:12]}",
                hint=f"remove the container first (`lamina rm {c.name}`), or untag anyway "
                f"with `lamina rmi -f {text}` (what the container needs is kept)",
            )
        plan.append(Untag(text, None if image is None else image.id, names, tuple(using)))
    return plan


# --------------------------------------------------------------------------- prune


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove). ``to_json`` is the
    documented ``--json`` output (README, "Housekeeping")."""

    dry_run: bool
    blobs: tuple[BlobInfo, ...] = ()
    kept_blobs: int = 0
    temp_files: int = 0
    snapshots: tuple[str, ...] = ()
    snapshot_bytes: int = 0
    cache_records: tuple[str, ...] = ()
    kept_cache_records: int = 0
    containers: int = 0  # containers whose images were kept for them

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    @property
    def reclaimed_bytes(self) -> int:
        return self.blob_bytes + self.snapshot_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "reclaimed_bytes": self.reclaimed_bytes,
            "removed_blobs": len(self.blobs),
            "removed_bytes": self.blob_bytes,
            "kept_blobs": self.kept_blobs,
            "removed_temp_files": self.temp_files,
            "removed_snapshots": len(self.snapshots),
            "removed_snapshot_bytes": self.snapshot_bytes,
            "removed_build_cache_records": len(self.cache_records),
            "kept_build_cache_records": self.kept_cache_records,
            "containers_in_use": self.containers,
            "blobs": [{"digest": str(b.digest), "size": b.size} for b in self.blobs],
            "snapshots": list(self.snapshots),
            "build_cache_records": list(self.cache_records),
        }


def _snapshotter(root: str) -> Snapshotter | None:
    from lamina.stateroot import snapshots_dir

    if not os.path.isdir(snapshots_dir(root)):
        return None
    from lamina.snapshot.overlay import OverlaySnapshotter

    return OverlaySnapshotter(root)


def prune(
    store: LocalStore, *, dry_run: bool, build_cache: bool, timeout: float | None = None
) -> PruneReport:
    """``lamina prune``: blobs no name, container, build cache record (unless
    ``build_cache``) or lease needs; unpacked layers no image or container needs, and
    what killed unpacks and builds left; dead build cache records (with
    ``build_cache`` also those whose layer goes)."""
    from lamina.builder.cache import BuildCache
    from lamina.builder.sandbox.workbench import LABEL_OWNER as BUILD_OWNER
    from lamina.builder.sandbox.workbench import Workbench
    from lamina.image.snapshots import (
        LABEL_OWNER,
        SnapshotPrunePlan,
        apply_snapshot_prune,
        plan_snapshot_prune,
    )

    cache = BuildCache(store.root)
    with store.gc_lock(timeout):
        users = containers_by_image(store.root)
        in_use = {digest: _why(cs) for digest, cs in users.items()}
        snap = _snapshotter(store.root)
        if build_cache:
            # The cache's layers go when nothing else needs them, and their records too.
            gc_plan = store.plan_gc(GCRoots(image_ids=in_use))
            reclaim = frozenset(b.digest for b in gc_plan.blobs)
            cache_plan = cache.plan_prune(store, reclaim=reclaim)
        else:
            cache_plan = cache.plan_prune(store)
            gc_plan = store.plan_gc(GCRoots(image_ids=in_use, blobs=cache_plan.keep_layers))
        snap_plan = SnapshotPrunePlan()
        if snap is not None:
            snap_plan = plan_snapshot_prune(
                store,
                snap,
                configs=_configs(store, in_use),
                owner_labels=(LABEL_OWNER, BUILD_OWNER),
            )
        containers = sum(len(cs) for cs in users.values())
        if dry_run:
            return PruneReport(
                True,
                gc_plan.blobs,
                gc_plan.kept_blobs,
                len(gc_plan.temp_files),
                snap_plan.names,
                snap_plan.bytes,
                cache_plan.drop,
                cache_plan.kept,
                containers,
            )
        # What killed builds left runs and is mounted: stop and unmount it first (its
        # snapshots are in the plan as stale).
        Workbench(store).remove_stale()
        removed_snaps: tuple[str, ...] = ()
        if snap is not None:
            apply_snapshot_prune(snap, snap_plan)
            snap.cleanup()
            present = {info.name for info in snap.walk()}
            removed_snaps = tuple(n for n in snap_plan.names if n not in present)
        cache.apply_prune(cache_plan)
        result = store.apply_gc(gc_plan)
        gone = tuple(b for b in gc_plan.blobs if not store.has(b.digest))
        return PruneReport(
            False,
            gone,
            result.kept_blobs,
            result.removed_temp_files,
            removed_snaps,
            sum(snap_plan.usage.get(n, 0) for n in removed_snaps),
            cache_plan.drop,
            cache_plan.kept,
            containers,
        )


def builder_prune(store: LocalStore, *, dry_run: bool, timeout: float | None = None) -> PruneReport:
    """``lamina builder prune``: every build cache record, and the blobs only they
    named (nothing else: an unnamed image's blobs are ``lamina prune``'s)."""
    from lamina.builder.cache import BuildCache

    cache = BuildCache(store.root)
    with store.gc_lock(timeout):
        users = containers_by_image(store.root)
        in_use = {digest: _why(cs) for digest, cs in users.items()}
        cache_plan = cache.plan_prune(store, everything=True)
        gc_plan = store.plan_gc(GCRoots(image_ids=in_use), only=cache_plan.dropped_layers)
        if dry_run:
            return PruneReport(
                True, gc_plan.blobs, gc_plan.kept_blobs, cache_records=cache_plan.drop
            )
        cache.apply_prune(cache_plan)
        result = store.apply_gc(gc_plan)
        gone = tuple(b for b in gc_plan.blobs if not store.has(b.digest))
        return PruneReport(False, gone, result.kept_blobs, cache_records=cache_plan.drop)
