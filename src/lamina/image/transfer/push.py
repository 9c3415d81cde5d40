"""Push an image from the store over any :class:`~.api.Pusher`.

Blobs first (config and layers, deduplicated, a bounded number at once), each one
HEAD-checked and skipped when the destination has it, mounted when another repository
of the same registry is known to hold it, uploaded otherwise; then child manifests by
digest; then the top manifest or index by tag (dist-spec "Pushing manifests": every
blob a manifest names must be there before the manifest).

An index is pushed whole when the store has every manifest it lists and their blobs (a
multi-platform image built or pulled with all platforms); otherwise only the platform
manifest the image resolves to is pushed, under the tag.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from lamina.errors import InvalidArgument, NotFound
from lamina.image.api import EXISTS, MOUNTED, UPLOADED, Pusher, TransferProgress
from lamina.image.transfer.concurrency import run_bounded
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest, parse_document
from lamina.oci.reference import Reference
from lamina.store.api import Store

MountSources = Callable[[Digest], tuple[str, ...]]
DEFAULT_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class PushPlan:
    """What to send: blobs, then ``manifests`` in order (children first, top last)."""

    blobs: tuple[Descriptor, ...]
    manifests: tuple[tuple[Descriptor, bytes], ...]

    @property
    def top(self) -> Descriptor:
        return self.manifests[-1][0]


@dataclass(frozen=True, slots=True)
class PushResult:
    reference: Reference
    descriptor: Descriptor  # the top manifest or index pushed under the reference
    blobs: tuple[Descriptor, ...]
    uploaded: int
    mounted: int
    existed: int
    uploaded_bytes: int


def _manifest_blobs(store: Store, desc: Descriptor) -> tuple[bytes, Manifest]:
    data = store.read_blob(desc.digest)
    doc = parse_document(data, desc.media_type)
    if not isinstance(doc, Manifest):
        raise InvalidArgument(f"{desc.digest} is an index inside an index; lamina pushes one level")
    return data, doc


def plan_push(store: Store, top: Descriptor, fallback: Descriptor | None = None) -> PushPlan:
    """The plan for ``top``; for an index whose platforms are not all in the store,
    the plan for ``fallback`` (the platform manifest) instead."""
    data = store.read_blob(top.digest)
    doc = parse_document(data, top.media_type)
    plain = Descriptor(top.media_type, top.digest, top.size)
    if isinstance(doc, Manifest):
        return PushPlan(_unique((doc.config, *doc.layers)), ((plain, data),))
    blobs: list[Descriptor] = []
    children: list[tuple[Descriptor, bytes]] = []
    try:
        for entry in doc.manifests:
            child_data, child = _manifest_blobs(store, entry)
            for blob in (child.config, *child.layers):
                if not store.has(blob.digest):
                    raise NotFound(f"blob {blob.digest} of {entry.digest}")
            blobs.extend((child.config, *child.layers))
            children.append((Descriptor(entry.media_type, entry.digest, entry.size), child_data))
    except NotFound:
        if fallback is None or fallback.digest == top.digest:
            raise
        return plan_push(store, fallback)
    return PushPlan(_unique(blobs), (*children, (plain, data)))


def _unique(blobs: tuple[Descriptor, ...] | list[Descriptor]) -> tuple[Descriptor, ...]:
    seen: dict[Digest, Descriptor] = {}
    for blob in blobs:
        seen.setdefault(blob.digest, blob)
    return tuple(seen.values())


async def push_image(
    pusher: Pusher,
    store: Store,
    plan: PushPlan,
    dest: Reference,
    *,
    progress: TransferProgress,
    parallel: int = DEFAULT_PARALLEL,
    mount_sources: MountSources | None = None,
) -> PushResult:
    if dest.digest is not None and dest.digest != plan.top.digest:
        raise InvalidArgument(
            f"{dest} names digest {dest.digest}, but the image is {plan.top.digest}",
            hint="push by tag, or name the image's own digest",
        )
    counts = {EXISTS: 0, MOUNTED: 0, UPLOADED: 0}
    sent = 0

    async def push_one(blob: Descriptor) -> None:
        nonlocal sent
        progress.start(blob)
        if await pusher.has_blob(dest, blob):
            how = EXISTS
        else:
            sources = mount_sources(blob.digest) if mount_sources else ()
            how = await pusher.push_blob(dest, blob, store, progress, mount_from=sources)
        counts[how] += 1
        if how == UPLOADED:
            sent += blob.size
        progress.finish(blob, how)

    await run_bounded([functools.partial(push_one, b) for b in plan.blobs], parallel)
    for desc, data in plan.manifests[:-1]:
        await pusher.push_manifest(
            Reference(dest.registry, dest.repository, None, desc.digest), desc, data
        )
    top, top_data = plan.manifests[-1]
    target = dest if dest.tag is not None else dest.with_digest(top.digest)
    await pusher.push_manifest(target, top, top_data)
    return PushResult(
        dest,
        top,
        plan.blobs,
        counts[UPLOADED],
        counts[MOUNTED],
        counts[EXISTS],
        sent,
    )
