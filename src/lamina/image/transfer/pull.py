"""Pull an image into the store over any :class:`~.api.Fetcher`.

Order matters for what a failure leaves behind: the manifest (and index) are fetched
and verified first but stored last, after every blob they name is in the store, and
the name is set after that. A failed pull leaves no name, no manifest, and no
unverified byte (blobs that did verify stay, to be reused by the next attempt, or
swept by gc).

The name is the reference as typed and normalised (``docker.io/library/x:1``,
``host:5000/app@sha256:...``), the same key ``lamina load`` and ``lamina tag`` use.
It names what the reference names (an index, for a multi-platform image) unless an
explicit ``--platform`` picked a manifest other than the one this host would pick;
then it names that manifest, so the image resolves on this host.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from lamina.errors import NotFound, SizeMismatch, Unsupported
from lamina.image.api import EXISTS, FETCHED, Fetcher, RemoteManifest, TransferProgress
from lamina.image.transfer.concurrency import run_bounded
from lamina.oci.canonical import check_document_size
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.oci.selection import select_manifest
from lamina.store.api import Store

# as skopeo (containers/image MaxParallelDownloads): 6 blobs at once keeps loopback and
# disk busy while hashing runs in threads
DEFAULT_PARALLEL = 6


@dataclass(frozen=True, slots=True)
class PullResult:
    name: str  # the ref key set in the store
    descriptor: Descriptor  # what the name points at
    top: Descriptor  # what the reference named on the registry (a manifest or an index)
    manifest: Descriptor  # the platform's manifest
    blobs: tuple[Descriptor, ...]  # config and layers
    fetched: int  # blobs transferred
    fetched_bytes: int


def _host_choice(index: Index) -> Digest | None:
    try:
        return select_manifest(index, Platform.host()).digest
    except NotFound:
        return None


async def pull_image(
    fetcher: Fetcher,
    store: Store,
    ref: Reference,
    *,
    platform: Platform | None = None,
    progress: TransferProgress,
    parallel: int = DEFAULT_PARALLEL,
) -> PullResult:
    top = await fetcher.fetch_manifest(ref)
    documents: list[RemoteManifest] = [top]
    doc = parse_document(top.data, top.descriptor.media_type)
    manifest_desc = top.descriptor
    named = top.descriptor
    if isinstance(doc, Index):
        entry = select_manifest(doc, platform or Platform.host())
        child = await fetcher.fetch_manifest(
            Reference(ref.registry, ref.repository, None, entry.digest)
        )
        # image-index.md: the entry's size must match the manifest it points at.
        if child.descriptor.size != entry.size:
            raise SizeMismatch(
                f"manifest {entry.digest} is {child.descriptor.size} bytes, "
                f"the index says {entry.size}"
            )
        if platform is not None and _host_choice(doc) != entry.digest:
            named = child.descriptor
        doc = parse_document(child.data, entry.media_type)
        manifest_desc = child.descriptor
        documents.append(child)
    if not isinstance(doc, Manifest):
        raise Unsupported(
            f"{ref} is an index of indexes, which lamina does not follow",
            hint="pull one of its manifests by digest",
        )
    # before any blob is fetched: a config over the cap would break every reader
    check_document_size("config", doc.config.size, f"image {ref}")
    blobs: dict[Digest, Descriptor] = {}
    for blob in (doc.config, *doc.layers):
        blobs.setdefault(blob.digest, blob)
    fetched = fetched_bytes = 0
    with store.lease():

        async def fetch(blob: Descriptor) -> None:
            nonlocal fetched, fetched_bytes
            progress.start(blob)
            await fetcher.fetch_blob(ref, blob, store, progress)
            fetched += 1
            fetched_bytes += blob.size
            progress.finish(blob, FETCHED)

        missing = []
        for blob in blobs.values():
            if _present(store, blob):
                progress.start(blob)
                progress.finish(blob, EXISTS)
            else:
                missing.append(blob)
        await run_bounded([functools.partial(fetch, b) for b in missing], parallel)
        for document in reversed(documents):
            await asyncio.to_thread(store.put_bytes, document.data, document.descriptor.digest)
        name = str(ref)
        store.set_ref(name, Descriptor(named.media_type, named.digest, named.size))
    return PullResult(
        name,
        named,
        top.descriptor,
        manifest_desc,
        tuple(blobs.values()),
        fetched,
        fetched_bytes,
    )


def _present(store: Store, blob: Descriptor) -> bool:
    try:
        return store.info(blob.digest).size == blob.size
    except NotFound:
        return False
