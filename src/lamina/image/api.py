"""Contracts of the image transports: the :class:`Fetcher` and :class:`Pusher` roles.

ARCHITECTURE.md section 2: the registry client, the P2P peer and the lazy loader are
all Fetchers, so the orchestration that pulls an image and pushes one
(``lamina.image.transfer.pull``/``push``) is written against these Protocols and never
against aiohttp, and ``build`` and ``image`` never import a transport: the CLI hands a
transport (``RegistryClient``) to the image-level functions. Tests run that
orchestration over an in-memory implementation (``tests/image/memory_remote.py``).

Lifecycle. A Fetcher/Pusher is an async context manager: entering opens its network
resources (connection pools, cached tokens), leaving closes them. Every method may be
called concurrently from several tasks; implementations bound their own parallelism
only as far as their transport requires (callers bound the number of blobs in flight).

Invariants.

- Every byte is verified. :meth:`Fetcher.fetch_manifest` checks the bytes against the
  digest of the reference (when it has one) and against the size cap; ``fetch_blob``
  streams into an :class:`~lamina.store.api.Ingester` that checks size and digest
  before anything becomes visible. A mismatch raises
  :class:`~lamina.errors.DigestMismatch` / :class:`~lamina.errors.SizeMismatch` and
  leaves nothing in the store.
- Retries are the implementation's business (dropped connections, 5xx, 429); what a
  caller sees is success or one final :class:`~lamina.errors.LaminaError`.
- Pushing is idempotent: a blob the destination has is not sent again
  (:meth:`Pusher.push_blob` answers how it got there), a manifest PUT twice is the
  same manifest.

Errors. NotFound (no such manifest or blob), RegistryError with the spec's code
(UNAUTHORIZED, DENIED, ...), IntegrityError subclasses, ToolError for a registry that
breaks the protocol (bad status, missing headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lamina.oci.descriptor import Descriptor
from lamina.oci.reference import Reference
from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, Ingester, Provider

# How a blob reached the destination of a push (or the store, for a pull).
EXISTS = "exists"  # the other side had it already: nothing sent
MOUNTED = "mounted"  # cross-repository mount: nothing sent
UPLOADED = "uploaded"  # bytes were sent
FETCHED = "fetched"  # bytes were received


@dataclass(frozen=True, slots=True)
class RemoteManifest:
    """A manifest or index as fetched: its descriptor (media type from the document
    and the registry's Content-Type, digest computed from the bytes) and the exact
    bytes, which are what the digest covers and what is stored."""

    descriptor: Descriptor
    data: bytes


class TransferProgress(Protocol):
    """Per-blob progress of a pull or push; the CLI draws one bar per blob.

    ``start`` once per blob, ``advance`` with byte counts as they move (may go back
    to zero on a retry: ``restart``), ``finish`` once with how it ended
    (:data:`EXISTS`, :data:`MOUNTED`, :data:`UPLOADED`, :data:`FETCHED`).
    Called on the event loop thread; must not block.
    """

    def start(self, descriptor: Descriptor) -> None: ...

    def advance(self, descriptor: Descriptor, nbytes: int) -> None: ...

    def restart(self, descriptor: Descriptor) -> None: ...

    def finish(self, descriptor: Descriptor, how: str) -> None: ...


class NoProgress:
    """A :class:`TransferProgress` that shows nothing."""

    def start(self, descriptor: Descriptor) -> None:
        return None

    def advance(self, descriptor: Descriptor, nbytes: int) -> None:
        return None

    def restart(self, descriptor: Descriptor) -> None:
        return None

    def finish(self, descriptor: Descriptor, how: str) -> None:
        return None


class Fetcher(Protocol):
    """Reads manifests and blobs of one image source (a registry, a peer, a cache)."""

    async def fetch_manifest(
        self, ref: Reference, max_size: int = MAX_METADATA_BYTES
    ) -> RemoteManifest:
        """The manifest or index ``ref`` names (by its digest if it has one, else by
        its tag). With a digest, the bytes are verified against it. NotFound if absent."""
        ...

    async def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        ingester: Ingester,
        progress: TransferProgress,
    ) -> BlobInfo:
        """Stream the blob ``descriptor`` names from ``ref``'s repository into
        ``ingester``, verified against its size and digest while it streams; nothing
        unverified is committed. Resumes or restarts on dropped connections."""
        ...


class Pusher(Protocol):
    """Writes blobs and manifests to one destination repository."""

    async def has_blob(self, ref: Reference, descriptor: Descriptor) -> bool:
        """Whether ``ref``'s repository has the blob (with the right size)."""
        ...

    async def push_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        provider: Provider,
        progress: TransferProgress,
        mount_from: tuple[str, ...] = (),
    ) -> str:
        """Make the blob present in ``ref``'s repository, reading it from ``provider``
        only if it must be sent; ``mount_from`` names other repositories of the same
        registry that are known to hold it (tried as cross-repository mounts first).
        Returns :data:`EXISTS`, :data:`MOUNTED` or :data:`UPLOADED`."""
        ...

    async def push_manifest(self, ref: Reference, descriptor: Descriptor, data: bytes) -> None:
        """PUT a manifest or index under ``ref``'s tag (or, without one, its digest).
        Every blob and child manifest it names must have been pushed first."""
        ...
