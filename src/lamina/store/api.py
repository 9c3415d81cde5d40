"""Contracts of the content store: blobs by digest, refs by name.

Roles, in containerd's words:

- :class:`Provider` reads blobs. Every read is verified: a reader that reaches EOF
  checks size and digest and raises :class:`~lamina.errors.IntegrityError` on a
  mismatch, so a blob damaged on disk is never silently served.
- :class:`Ingester` writes blobs. An ingest streams into a temp file beside the blob
  directory while hashing; on ``commit`` it checks the expected size and digest, fsyncs,
  renames into place and fsyncs the directory. A mismatch, an exception or a killed
  process leaves no blob behind (temp files of dead writers are swept by ``gc``).
  Ingesting a blob that exists is a cheap no-op that still consumes and verifies the
  input (so callers can stream without asking first), unless the caller checks ``has``.
- :class:`RefStore` maps names (full references such as
  ``docker.io/library/busybox:latest``) to descriptors of manifests or indexes.
  Updates are atomic (write temp, fsync, rename) and serialised by a file lock, so
  several ``lamina`` processes may tag and untag at once.
- :class:`Store` is all three plus leases and garbage collection. ``gc`` marks from
  every ref (walking manifests, indexes and their configs, layers and ``subject``) and
  from the caller's :class:`GCRoots` (what containers and the build cache still need:
  the store cannot see them, they live in rows above) and sweeps the rest. It takes the
  store's exclusive lock; every writer holds a :meth:`Store.lease` (the shared side of
  that lock) from its first blob to its last ref update, so gc never removes a blob that
  an import, a pull or a build in another process is about to name.
- Collection is one code path in two steps: :meth:`Store.plan_gc` says what would go
  (a :class:`GCPlan`), :meth:`Store.apply_gc` removes exactly that. Both run inside
  :meth:`Store.gc_lock`, so a dry run reports what a real run removes, and callers
  that sweep more than blobs (``lamina prune``: snapshots, build cache records) hold
  the one lock across all their plans.

All methods are synchronous and thread-safe; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest

# Manifests, indexes and configs are read whole; cap them (CVE-2020-1702 class).
MAX_METADATA_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob in the store: its digest and size."""

    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class GCResult:
    """What a garbage collection removed and kept."""

    removed_blobs: int
    removed_bytes: int
    kept_blobs: int
    # temp files of dead writers (killed ingests) swept from the ingest area
    removed_temp_files: int = 0


@dataclass(frozen=True, slots=True)
class GCRoots:
    """What gc keeps besides the refs (each value says why, for messages).

    - ``documents``: manifests or indexes walked like refs (their configs, layers,
      children and subjects are kept too);
    - ``image_ids``: config digests of images in use (a container's image): the config is
      kept, and so is every manifest in the store whose config it is, with its layers.
      Found by sniffing small unmarked blobs, so a container keeps its image after the
      image lost its last name (``rmi -f``, a tag moved by pull or build);
    - ``blobs``: single blobs to keep (layers the build cache names).

    Digests that are not in the store are ignored.
    """

    documents: Mapping[str, Descriptor] = field(default_factory=dict)
    image_ids: Mapping[Digest, str] = field(default_factory=dict)
    blobs: Mapping[Digest, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GCPlan:
    """What a collection removes: blobs (sorted by digest), the temp files of dead
    writers (paths), and how many blobs stay. Made by :meth:`Store.plan_gc`, carried out
    by :meth:`Store.apply_gc`, reported by dry runs as is."""

    blobs: tuple[BlobInfo, ...] = ()
    temp_files: tuple[str, ...] = ()
    kept_blobs: int = 0

    @property
    def removed_bytes(self) -> int:
        return sum(info.size for info in self.blobs)

    def result(self) -> GCResult:
        """The plan as the result of a run that removed all of it (a dry run's answer)."""
        return GCResult(len(self.blobs), self.removed_bytes, self.kept_blobs, len(self.temp_files))


class BlobWriter(Protocol):
    """An open ingest. Use as a context manager; leaving without ``commit`` aborts."""

    def write(self, data: bytes | memoryview, /) -> int: ...

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    def commit(self, expected: Digest | None = None, size: int | None = None) -> BlobInfo:
        """Verify, fsync and rename into place; returns the blob's digest and size.

        Raises DigestMismatch / SizeMismatch (and removes the temp file) on a mismatch.
        """
        ...

    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(self, *exc: object) -> None: ...


class Provider(Protocol):
    def has(self, digest: Digest) -> bool: ...

    def info(self, digest: Digest) -> BlobInfo:
        """Raises NotFound."""
        ...

    def open_blob(self, digest: Digest, size: int | None = None) -> BinaryIO:
        """A verifying reader; raises NotFound. Reading to EOF checks size and digest."""
        ...

    def read_blob(self, digest: Digest, max_size: int = MAX_METADATA_BYTES) -> bytes:
        """The whole (small) blob, verified; LimitExceeded if larger than max_size."""
        ...

    def blob_path(self, digest: Digest) -> str:
        """Path of the blob file, for sendfile and hardlinks. The file is read-only."""
        ...


class Ingester(Protocol):
    def writer(self, algorithm: str = "sha256") -> BlobWriter: ...

    def ingest(
        self,
        stream: BinaryIO,
        expected: Digest | None = None,
        size: int | None = None,
    ) -> BlobInfo:
        """Copy a stream into the store (1 MiB chunks), verifying as it goes."""
        ...

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> BlobInfo: ...


class RefStore(Protocol):
    def get_ref(self, name: str) -> Descriptor:
        """Raises NotFound."""
        ...

    def set_ref(self, name: str, target: Descriptor) -> None: ...

    def delete_ref(self, name: str) -> None:
        """Raises NotFound."""
        ...

    def list_refs(self) -> dict[str, Descriptor]: ...


class Store(Provider, Ingester, RefStore, Protocol):
    root: str

    def lease(self) -> AbstractContextManager[None]:
        """Hold while creating blobs that refs will name; blocks only during gc."""
        ...

    def gc_lock(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the exclusive side of the lease lock: waits until no lease is held in
        any process (Conflict after ``timeout`` seconds) and keeps new ones waiting.
        :meth:`plan_gc` and :meth:`apply_gc` are called inside it."""
        ...

    def plan_gc(
        self, roots: GCRoots | None = None, *, only: frozenset[Digest] | None = None
    ) -> GCPlan:
        """What gc would remove: every blob neither a ref nor ``roots`` reaches (only
        those in ``only`` when given: ``lamina builder prune`` sweeps just what the
        build cache named), and temp files of dead writers (not with ``only``).
        Conflict unless called inside :meth:`gc_lock`; removes nothing."""
        ...

    def apply_gc(self, plan: GCPlan) -> GCResult:
        """Remove what ``plan`` lists (inside the same :meth:`gc_lock` that made it);
        returns what was removed."""
        ...

    def gc(self, dry_run: bool = False, roots: GCRoots | None = None) -> GCResult:
        """``plan_gc`` then (unless ``dry_run``) ``apply_gc``, under :meth:`gc_lock`."""
        ...

    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    def delete_blob(self, digest: Digest) -> None: ...
