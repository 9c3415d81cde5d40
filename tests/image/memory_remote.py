"""An in-memory registry: a second implementation of the Fetcher and Pusher Protocols.

It is not a mock of the registry client: it keeps repositories of blobs and manifests
in dicts and answers as the Protocols in ``lamina.image.api`` say a transport must
(manifests verified against a digest reference, blobs streamed into the ingester and
committed against their descriptor, cross-repository mounts only from repositories that
hold the blob, a manifest refused while a blob or child manifest it names is missing,
as distribution's MANIFEST_BLOB_UNKNOWN). So ``lamina.image.transfer`` runs over it
without sockets, and the test can look at what happened: ``events`` in order, the most
blob transfers in flight at once, and which served blobs were damaged on purpose.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from lamina.errors import DigestMismatch, LimitExceeded, NotFound
from lamina.image.api import MOUNTED, UPLOADED, RemoteManifest, TransferProgress
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document, referenced_descriptors
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.registry.errors import RegistryError
from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, Ingester, Provider

PIECE = 1000  # blobs move in pieces this size, yielding to the loop between them


@dataclass
class Repository:
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # tag or digest


@dataclass
class MemoryRegistry:
    """Repositories of one registry host, and what was asked of them."""

    host: str = "memory.test"
    repos: dict[str, Repository] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    corrupt: set[Digest] = field(default_factory=set)  # served with a flipped byte
    in_flight: int = 0
    max_in_flight: int = 0

    def repo(self, name: str) -> Repository:
        return self.repos.setdefault(name, Repository())

    def ref(self, repository: str, tag: str | None = "1") -> Reference:
        return Reference(self.host, repository, tag, None)

    # -- putting images there, as another client would have -------------------------------

    def put_blob(self, repository: str, data: bytes, media_type: str = mt.OCI_LAYER) -> Descriptor:
        digest = Digest.from_bytes(data)
        self.repo(repository).blobs[digest] = data
        return Descriptor(media_type, digest, len(data))

    def put_manifest(
        self, repository: str, tag: str | None, data: bytes, media_type: str
    ) -> Descriptor:
        digest = Digest.from_bytes(data)
        repo = self.repo(repository)
        repo.manifests[str(digest)] = (media_type, data)
        if tag is not None:
            repo.manifests[tag] = (media_type, data)
        return Descriptor(media_type, digest, len(data))

    def put_image(
        self,
        repository: str,
        tag: str | None,
        layers: list[bytes],
        platform: Platform | None = None,
    ) -> tuple[Descriptor, Manifest]:
        """A manifest of ``layers`` and a small config, under ``tag``."""
        config = json.dumps(
            {"architecture": (platform or Platform.host()).architecture, "os": "linux"}
        ).encode()
        manifest = Manifest(
            self.put_blob(repository, config, mt.OCI_CONFIG),
            tuple(self.put_blob(repository, layer) for layer in layers),
        )
        desc = self.put_manifest(repository, tag, manifest.to_bytes(), mt.OCI_MANIFEST)
        return desc, manifest

    # -- one side of a transfer -----------------------------------------------------------

    async def moving(
        self, data: bytes, sink: list[bytes], progress: TransferProgress, desc: Descriptor
    ) -> None:
        """Move ``data`` in pieces into ``sink``, counting the transfers in flight."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for start in range(0, len(data), PIECE):
                piece = data[start : start + PIECE]
                sink.append(piece)
                progress.advance(desc, len(piece))
                await asyncio.sleep(0)
            await asyncio.sleep(0.005)  # long enough for every allowed job to start
        finally:
            self.in_flight -= 1


class MemoryRemote:
    """A Fetcher and a Pusher over a :class:`MemoryRegistry` (as ``RegistryClient`` is
    both over HTTP)."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry
        self.opened = False

    async def __aenter__(self) -> MemoryRemote:
        self.opened = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.opened = False

    def _repo(self, ref: Reference) -> Repository:
        if ref.registry != self.registry.host:
            raise NotFound(f"no registry {ref.registry}")
        return self.registry.repo(ref.repository)

    # -- Fetcher --------------------------------------------------------------------------

    async def fetch_manifest(
        self, ref: Reference, max_size: int = MAX_METADATA_BYTES
    ) -> RemoteManifest:
        key = str(ref.digest) if ref.digest is not None else (ref.tag or "latest")
        self.registry.events.append(("fetch_manifest", key))
        try:
            media_type, data = self._repo(ref).manifests[key]
        except KeyError:
            raise NotFound(f"manifest {ref}") from None
        if len(data) > max_size:
            raise LimitExceeded(f"manifest {ref} is over {max_size} bytes")
        digest = Digest.from_bytes(data)
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatch(f"manifest {ref}: content has digest {digest}")
        doc = parse_document(data, media_type)
        return RemoteManifest(Descriptor(doc.media_type, digest, len(data)), data)

    async def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        ingester: Ingester,
        progress: TransferProgress,
    ) -> BlobInfo:
        self.registry.events.append(("fetch_blob", str(descriptor.digest)))
        try:
            data = self._repo(ref).blobs[descriptor.digest]
        except KeyError:
            raise NotFound(f"blob {descriptor.digest} in {ref.repository}") from None
        if descriptor.digest in self.registry.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        pieces: list[bytes] = []
        await self.registry.moving(data, pieces, progress, descriptor)
        writer = ingester.writer(descriptor.digest.algorithm)
        try:
            for piece in pieces:
                writer.write(piece)
            return writer.commit(descriptor.digest, descriptor.size)
        finally:
            writer.abort()

    # -- Pusher ---------------------------------------------------------------------------

    async def has_blob(self, ref: Reference, descriptor: Descriptor) -> bool:
        self.registry.events.append(("has_blob", str(descriptor.digest)))
        data = self._repo(ref).blobs.get(descriptor.digest)
        return data is not None and len(data) == descriptor.size

    async def push_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        provider: Provider,
        progress: TransferProgress,
        mount_from: tuple[str, ...] = (),
    ) -> str:
        repo = self._repo(ref)
        for source in mount_from:
            held = self.registry.repos.get(source)
            if held is not None and descriptor.digest in held.blobs:
                self.registry.events.append(("mount_blob", str(descriptor.digest)))
                repo.blobs[descriptor.digest] = held.blobs[descriptor.digest]
                return MOUNTED
        self.registry.events.append(("upload_blob", str(descriptor.digest)))
        with provider.open_blob(descriptor.digest, descriptor.size) as f:
            data = f.read()
        pieces: list[bytes] = []
        await self.registry.moving(data, pieces, progress, descriptor)
        sent = b"".join(pieces)
        # dist-spec "Pushing blobs": the registry checks the digest it was told
        if Digest.from_bytes(sent) != descriptor.digest or len(sent) != descriptor.size:
            raise RegistryError("DIGEST_INVALID", f"blob {descriptor.digest}")
        repo.blobs[descriptor.digest] = sent
        return UPLOADED

    async def push_manifest(self, ref: Reference, descriptor: Descriptor, data: bytes) -> None:
        target = ref.tag if ref.tag is not None else str(descriptor.digest)
        self.registry.events.append(("push_manifest", target))
        descriptor.digest.verify(data)
        repo = self._repo(ref)
        doc = parse_document(data, descriptor.media_type)
        for named in referenced_descriptors(descriptor.media_type, data):
            present = (
                str(named.digest) in repo.manifests
                if isinstance(doc, Index)
                else named.digest in repo.blobs
            )
            if not present:
                code = "MANIFEST_UNKNOWN" if isinstance(doc, Index) else "MANIFEST_BLOB_UNKNOWN"
                raise RegistryError(code, f"{named.digest} named by {target} is not there")
        repo.manifests[str(descriptor.digest)] = (descriptor.media_type, data)
        repo.manifests[target] = (descriptor.media_type, data)
