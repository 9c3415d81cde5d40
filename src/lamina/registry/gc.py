"""Registry garbage collection (``lamina registry gc``): mark, then sweep.

Mark: every manifest revision of every repository and every tag's target is a root;
from each root the children named by :func:`lamina.oci.manifest.referenced_descriptors`
(config, layers, index entries, ``subject``) are marked, recursively through indexes.
With ``delete_untagged`` only tags are roots: a revision that no tag reaches (directly or
through an index) and that is not a referrer (``subject``) of one that is, is deleted
first, like distribution's ``--delete-untagged``.

Sweep: a blob is deleted only when it is unmarked **and** older than the grace period.
That is what keeps concurrent pushes safe without any lock: a client uploads blobs
first and puts the manifest naming them last, so a blob finished a moment ago, not yet
named by a manifest, is young and stays; an open upload lives apart from the blobs
(in the driver's upload sessions) and is never touched. Before each batch of deletions
the roots are listed again and anything a manifest put since names is spared. What
remains is the window every registry has (a client that decides to skip an upload
because a blob exists, while GC deletes that old orphan): the server refuses a manifest
whose blobs are missing, and the client pushes them again.

Blob ages come from the driver: ``iter_blob_stats`` (S3's listing), else the local file
of ``blob_path`` (its ctime: when it was linked into the store), else the blob is taken
as young and kept. Errors: a blob typed as a manifest or index that cannot be read stops
the collection before anything is deleted (its children are unknown).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lamina.errors import InvalidFormat, LaminaError, NotFound
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import parse_document, referenced_descriptors
from lamina.registry.storage.api import RegistryStorage, SweepsTemporaries

DEFAULT_GRACE = 3600.0
# Blobs deleted between two re-listings of the manifests: bounds how long a manifest put
# during the sweep can go unseen.
SWEEP_BATCH = 256


@runtime_checkable
class DatedBlobs(Protocol):
    """A driver that can list blobs with their sizes and store times in one pass."""

    def iter_blob_stats(self) -> Iterator[tuple[Digest, int, float]]: ...


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one collection found and did (or, with ``dry_run``, would do)."""

    dry_run: bool
    marked_blobs: int  # blobs a manifest or tag needs (present or not)
    kept_blobs: int  # stored blobs left in place
    young_blobs: int  # of those, unmarked but inside the grace period
    deleted_blobs: tuple[Digest, ...] = ()
    freed_bytes: int = 0
    deleted_manifests: tuple[tuple[str, Digest], ...] = ()
    missing_blobs: tuple[Digest, ...] = field(default=())  # marked but not stored
    expired_uploads: tuple[str, ...] = ()  # upload ids cancelled for their age
    swept_temporaries: tuple[str, ...] = ()  # what killed writers left (see the driver)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "marked_blobs": self.marked_blobs,
            "kept_blobs": self.kept_blobs,
            "young_blobs": self.young_blobs,
            "deleted_blobs": [str(d) for d in self.deleted_blobs],
            "freed_bytes": self.freed_bytes,
            "deleted_manifests": [
                {"repository": name, "digest": str(d)} for name, d in self.deleted_manifests
            ],
            "missing_blobs": [str(d) for d in self.missing_blobs],
            "expired_uploads": list(self.expired_uploads),
            "swept_temporaries": list(self.swept_temporaries),
        }


def _is_document_type(media_type: str) -> bool:
    return media_type in mt.MANIFEST_TYPES or media_type in mt.INDEX_TYPES


def _is_leaf_type(media_type: str) -> bool:
    return mt.is_layer(media_type) or media_type in mt.CONFIG_TYPES or media_type == mt.OCI_EMPTY


class _Graph:
    """Children of blobs, each document read at most once per collection."""

    def __init__(self, storage: RegistryStorage) -> None:
        self.storage = storage
        self._children: dict[Digest, list[Descriptor]] = {}
        self.missing: set[Digest] = set()

    def _read(self, digest: Digest, limit: int) -> bytes | None:
        try:
            with self.storage.open_blob(digest) as r:
                out = bytearray()
                while len(out) <= limit and (block := r.read(limit + 1 - len(out))):
                    out += block
        except NotFound:
            self.missing.add(digest)
            return None
        return bytes(out) if len(out) <= limit else None

    def children(self, desc: Descriptor) -> list[Descriptor]:
        cached = self._children.get(desc.digest)
        if cached is not None:
            return cached
        found: list[Descriptor] = []
        media_type = desc.media_type
        if not _is_leaf_type(media_type) and desc.size <= MAX_DOCUMENT_BYTES:
            data = self._read(desc.digest, MAX_DOCUMENT_BYTES)
            if data is not None:
                try:
                    found = referenced_descriptors(media_type, data)
                except InvalidFormat as exc:
                    if _is_document_type(media_type):
                        raise InvalidFormat(
                            f"gc stopped: {media_type} {desc.digest} cannot be read: {exc}",
                            hint="delete that manifest through the API, then rerun gc",
                        ) from exc
        self._children[desc.digest] = found
        return found

    def root_descriptor(self, name: str, digest: Digest) -> Descriptor:
        """A revision as a descriptor (its stored media type; sniffed if unknown)."""
        try:
            media_type, data = self.storage.get_manifest(name, digest)
        except NotFound:
            media_type, data = "application/octet-stream", b""
        return Descriptor(media_type or "application/octet-stream", digest, len(data))

    def closure(self, roots: Iterable[Descriptor], into: set[Digest]) -> None:
        todo = [r for r in roots if r.digest not in into]
        into.update(r.digest for r in todo)
        while todo:
            for child in self.children(todo.pop()):
                if child.digest not in into:
                    into.add(child.digest)
                    todo.append(child)


def _blob_stats(storage: RegistryStorage) -> dict[Digest, tuple[int, float]]:
    """digest -> (size, stored at); +inf when the driver cannot tell (never swept)."""
    if isinstance(storage, DatedBlobs):
        return {d: (size, modified) for d, size, modified in storage.iter_blob_stats()}
    stats: dict[Digest, tuple[int, float]] = {}
    for d in storage.iter_blobs():
        with contextlib.suppress(NotFound):
            path = storage.blob_path(d)
            if path is None:
                stats[d] = (storage.stat_blob(d), math.inf)
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # deleted while we looked
            except OSError as exc:
                raise LaminaError(f"gc: stat of blob {d}: {exc.strerror or exc}") from exc
            # ctime: a blob enters the store by link(), which sets it (mtime may be older).
            stats[d] = (st.st_size, max(st.st_mtime, st.st_ctime))
    return stats


def _tag_targets(storage: RegistryStorage, name: str) -> set[Digest]:
    targets: set[Digest] = set()
    with contextlib.suppress(NotFound):
        for tag in storage.list_tags(name):
            with contextlib.suppress(NotFound):  # untagged meanwhile, or damaged
                targets.add(storage.resolve_tag(name, tag))
    return targets


class _Collector:
    def __init__(self, storage: RegistryStorage, cutoff: float, delete_untagged: bool) -> None:
        self.storage = storage
        self.cutoff = cutoff
        self.delete_untagged = delete_untagged
        self.graph = _Graph(storage)
        self.stats: dict[Digest, tuple[int, float]] = {}
        self.roots: dict[str, set[Digest]] = {}  # repository -> revisions kept as roots
        self.doomed: list[tuple[str, Digest]] = []

    def young(self, digest: Digest) -> bool:
        stat = self.stats.get(digest)
        # Not listed yet: stored after the listing, so young.
        return stat is None or stat[1] > self.cutoff

    def scan(self, name: str) -> None:
        revisions = set(self.storage.iter_manifests(name))
        tagged = _tag_targets(self.storage, name)
        if not self.delete_untagged:
            self.roots[name] = revisions | tagged
            return
        # Young revisions stay: an index's children are put before the tagged index.
        keep = tagged | {d for d in revisions if self.young(d)}
        while True:
            reached: set[Digest] = set()
            self.graph.closure((self.graph.root_descriptor(name, d) for d in keep), reached)
            grown = keep | (revisions & reached)
            # OCI referrers (signatures, SBOMs) live as long as their subject does.
            grown |= {d for d in revisions - grown if self._subject_of(name, d) in reached}
            if grown == keep:
                break
            keep = grown
        self.roots[name] = keep
        self.doomed.extend((name, d) for d in sorted(revisions - keep))

    def _subject_of(self, name: str, digest: Digest) -> Digest | None:
        try:
            media_type, data = self.storage.get_manifest(name, digest)
            subject = parse_document(data, media_type or None).subject
        except NotFound:
            return None
        except InvalidFormat:
            return digest  # unreadable: treated as a referrer of itself, so never deleted
        return None if subject is None else subject.digest

    def remark_fresh(self, marked: set[Digest], dry_run: bool) -> None:
        """Mark what revisions and tags that appeared since the scan need."""
        doomed = set(self.doomed) if dry_run else set()
        for name in self.storage.list_repositories():
            seen = self.roots.setdefault(name, set())
            fresh = set(self.storage.iter_manifests(name)) | _tag_targets(self.storage, name)
            fresh = {d for d in fresh - seen if (name, d) not in doomed}
            self.graph.closure((self.graph.root_descriptor(name, d) for d in fresh), marked)
            seen |= fresh

    def mark(self) -> set[Digest]:
        marked: set[Digest] = set()
        for name, digests in self.roots.items():
            self.graph.closure((self.graph.root_descriptor(name, d) for d in digests), marked)
        return marked


def collect(
    storage: RegistryStorage,
    *,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE,
    delete_untagged: bool = False,
    upload_max_age: float | None = None,
    now: float | None = None,
) -> GcReport:
    """Delete blobs no manifest or tag needs that are older than ``grace_seconds``
    (see the module docstring); with ``dry_run`` only report what would go. With
    ``upload_max_age`` (seconds), upload sessions started longer ago than that are
    cancelled too (a client that has not finished in that time never will). ``now``
    (seconds since the epoch) is the clock the ages are measured against. Temporaries a
    killed writer left (``SweepsTemporaries`` drivers) older than the grace period are
    removed too; a dry run only lists those."""
    started = time.time() if now is None else now
    swept: list[str] = []
    if isinstance(storage, SweepsTemporaries):
        swept = storage.sweep_temporaries(max(0.0, grace_seconds), now=started, dry_run=dry_run)
    expired: list[str] = []
    if upload_max_age is not None:
        for info in list(storage.iter_uploads()):
            if started - info.started > upload_max_age:
                if not dry_run:
                    storage.cancel_upload(info.name, info.uuid)
                expired.append(info.uuid)
    c = _Collector(storage, started - max(0.0, grace_seconds), delete_untagged)
    # Blobs are listed first: whatever a manifest listed after this names is marked.
    c.stats = _blob_stats(storage)
    for name in storage.list_repositories():
        c.scan(name)
    deleted_manifests: list[tuple[str, Digest]] = []
    for name, d in c.doomed:
        if not dry_run:
            try:
                storage.delete_manifest(name, d)
            except NotFound:
                continue
        deleted_manifests.append((name, d))
    marked = c.mark()
    candidates = {d for d in c.stats if d not in marked and not c.young(d)}
    young = sum(1 for d in c.stats if d not in marked and c.young(d))
    deleted: list[Digest] = []
    freed = 0
    todo = sorted(candidates)
    while todo:
        # Manifests put while we marked (or swept the last batch): spare what they name.
        c.remark_fresh(marked, dry_run)
        batch, todo = todo[:SWEEP_BATCH], todo[SWEEP_BATCH:]
        for d in batch:
            if d in marked:
                continue
            if not dry_run:
                try:
                    storage.delete_blob(d)
                except NotFound:
                    continue
            deleted.append(d)
            freed += c.stats[d][0]
    return GcReport(
        dry_run=dry_run,
        marked_blobs=len(marked),
        kept_blobs=len(c.stats) - len(deleted),
        young_blobs=young,
        deleted_blobs=tuple(deleted),
        freed_bytes=freed,
        deleted_manifests=tuple(deleted_manifests),
        missing_blobs=tuple(sorted(c.graph.missing & marked)),
        expired_uploads=tuple(expired),
        swept_temporaries=tuple(swept),
    )
