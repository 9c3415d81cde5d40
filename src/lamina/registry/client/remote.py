"""RegistryClient: a :class:`~.api.Fetcher` and :class:`~.api.Pusher` over the OCI
Distribution Spec v1.1 (spec sections cited as "dist-spec <section>").

Manifests are read whole (capped at 4 MiB) and verified against the reference's digest,
or, by tag, against the registry's ``Docker-Content-Digest``. Blobs stream into the
store's verified ingest in 1 MiB writes made, in order, by a thread of the blob's own
while the next megabytes arrive (see ``_drain``); a connection that drops mid-blob is resumed with a
``Range`` request from the first byte not yet written, or restarted when the registry
ignores ``Range``. Uploads are in ``blob_upload.py``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from lamina.errors import DigestMismatch, InvalidFormat, LimitExceeded, SizeMismatch
from lamina.http import Backoff, network_errors
from lamina.image.api import Fetcher, Pusher, RemoteManifest, TransferProgress
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import parse_document
from lamina.oci.reference import Reference
from lamina.registry.challenges import PULL, PUSH, Scope
from lamina.registry.client.blob_upload import DEFAULT_CHUNK_SIZE, upload_blob
from lamina.registry.client.transport import (
    Response,
    Transport,
    _network_error,
    into_reader,
)
from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, BlobWriter, Ingester, Provider

CHUNK = 1 << 20
_RING = 3  # buffers per blob being drained
MANIFEST_ACCEPT = ", ".join(
    [mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST]
)


def pull_scope(ref: Reference) -> tuple[Scope, ...]:
    return (Scope(ref.repository, (PULL,)),)


def push_scope(ref: Reference) -> tuple[Scope, ...]:
    return (Scope(ref.repository, (PULL, PUSH)),)


def _content_type(resp: Response) -> str | None:
    value = resp.headers.get("Content-Type", "")
    return value.split(";", 1)[0].strip() or None


class RegistryClient:
    """The distribution API client. ``async with RegistryClient(transport) as c:``."""

    def __init__(self, transport: Transport, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.transport = transport
        self.chunk_size = chunk_size

    async def __aenter__(self) -> RegistryClient:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.__aexit__(*exc)

    def url(self, ref: Reference, path: str) -> str:
        return f"{self.transport.base_url(ref.registry)}/v2/{ref.repository}/{path}"

    # -- the base check (dist-spec "Determining support"), used by login ---------------

    async def check(self, registry: str) -> None:
        """GET /v2/ with the full auth flow; raises if the registry refuses us."""
        await self.transport.prepare(registry)
        url = f"{self.transport.base_url(registry)}/v2/"
        async with self.transport.request("GET", url, registry=registry, what="/v2/"):
            return None

    # -- Fetcher -------------------------------------------------------------------------

    async def fetch_manifest(
        self, ref: Reference, max_size: int = MAX_METADATA_BYTES
    ) -> RemoteManifest:
        await self.transport.prepare(ref.registry)
        target = str(ref.digest) if ref.digest is not None else (ref.tag or "latest")
        what = f"manifest {ref}"
        async with self.transport.request(
            "GET",
            self.url(ref, f"manifests/{target}"),
            registry=ref.registry,
            scopes=pull_scope(ref),
            headers={"Accept": MANIFEST_ACCEPT},
            what=what,
        ) as resp:
            length = resp.content_length
            if length is not None and length > max_size:
                raise _too_big(what, length, max_size)
            data = await resp.content.read(max_size + 1)
            while len(data) <= max_size and not resp.content.at_eof():
                more = await resp.content.read(max_size + 1 - len(data))
                if not more:
                    break
                data += more
            if len(data) > max_size:
                raise _too_big(what, len(data), max_size, more=True)
            served_type = _content_type(resp)
            header_digest = resp.headers.get("Docker-Content-Digest")
        algorithm = ref.digest.algorithm if ref.digest is not None else "sha256"
        digest = Digest.from_bytes(data, algorithm)
        # dist-spec "Pulling manifests": a client SHOULD verify the returned manifest
        # against the digest it asked for (or the one the registry announces).
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatch(
                f"{what}: the registry sent content with digest {digest}",
                hint="the registry is serving corrupted or substituted content",
            )
        if (
            header_digest
            and header_digest.startswith(f"{algorithm}:")
            and ref.digest is None
            and header_digest != str(digest)
        ):
            raise DigestMismatch(
                f"{what}: content has digest {digest}, the registry says {header_digest}",
                hint="the registry is serving corrupted content; try again",
            )
        if served_type not in mt.MANIFEST_TYPES and served_type not in mt.INDEX_TYPES:
            served_type = None  # application/json, octet-stream: let the document tell
        try:
            doc = parse_document(data, served_type)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{what}: {exc.message}", hint=exc.hint) from exc
        descriptor = Descriptor(doc.media_type, digest, len(data))
        return RemoteManifest(descriptor, data)

    async def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        ingester: Ingester,
        progress: TransferProgress,
    ) -> BlobInfo:
        await self.transport.prepare(ref.registry)
        url = self.url(ref, f"blobs/{descriptor.digest}")
        what = f"blob {descriptor.digest}"
        backoff = Backoff(self.transport.attempts)
        writer = ingester.writer(descriptor.digest.algorithm)
        try:
            while True:
                offset = writer.size
                headers = {"Range": f"bytes={offset}-"} if offset else None
                try:
                    async with self.transport.request(
                        "GET",
                        url,
                        registry=ref.registry,
                        scopes=pull_scope(ref),
                        headers=headers,
                        ok=(200, 206),
                        what=what,
                    ) as resp:
                        if offset and not _resumes_at(resp, offset):
                            # dist-spec "Fetch blob part": Range is optional; start over.
                            writer.abort()
                            writer = ingester.writer(descriptor.digest.algorithm)
                            progress.restart(descriptor)
                        await _drain(resp, writer, descriptor, progress)
                    break
                except network_errors() as exc:
                    if not backoff.more():
                        raise _network_error("GET", url, exc) from exc
                    await backoff.wait()
            return await asyncio.to_thread(writer.commit, descriptor.digest, descriptor.size)
        except (DigestMismatch, SizeMismatch) as exc:
            raise type(exc)(
                f"{what} from {ref.name}: {exc.message}",
                hint="the registry holds a damaged copy; nothing was stored",
            ) from exc
        finally:
            writer.abort()

    # -- Pusher --------------------------------------------------------------------------

    async def has_blob(self, ref: Reference, descriptor: Descriptor) -> bool:
        await self.transport.prepare(ref.registry)
        async with self.transport.request(
            "HEAD",
            self.url(ref, f"blobs/{descriptor.digest}"),
            registry=ref.registry,
            scopes=push_scope(ref),
            ok=(200, 404),
            what=f"blob {descriptor.digest}",
        ) as resp:
            if resp.status == 404:
                return False
            length = resp.headers.get("Content-Length")
            return length is None or length == str(descriptor.size)

    async def push_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        provider: Provider,
        progress: TransferProgress,
        mount_from: tuple[str, ...] = (),
    ) -> str:
        await self.transport.prepare(ref.registry)
        return await upload_blob(
            self.transport,
            self.url(ref, "blobs/uploads/"),
            ref,
            desc=descriptor,
            provider=provider,
            progress=progress,
            mount_from=mount_from,
            chunk_size=self.chunk_size,
        )

    async def push_manifest(self, ref: Reference, descriptor: Descriptor, data: bytes) -> None:
        if len(data) != descriptor.size:
            raise SizeMismatch(
                f"manifest {descriptor.digest} is {len(data)} bytes, not {descriptor.size}"
            )
        descriptor.digest.verify(data)
        await self.transport.prepare(ref.registry)
        target = ref.tag if ref.tag is not None else str(descriptor.digest)
        if ref.digest is not None and ref.tag is None and ref.digest != descriptor.digest:
            raise DigestMismatch(f"cannot push {descriptor.digest} as {ref}")
        async with self.transport.request(
            "PUT",
            self.url(ref, f"manifests/{target}"),
            registry=ref.registry,
            scopes=push_scope(ref),
            headers={"Content-Type": descriptor.media_type},
            body=data,
            ok=(200, 201),
            what=f"manifest {ref.name}:{target}",
        ) as resp:
            announced = resp.headers.get("Docker-Content-Digest")
        if (
            announced
            and announced.startswith("sha256:")
            and descriptor.digest.algorithm == "sha256"
            and announced != str(descriptor.digest)
        ):
            raise DigestMismatch(
                f"the registry stored manifest {ref} as {announced}, not {descriptor.digest}",
                hint="the registry rewrote the manifest; it is not content-addressable",
            )


def _too_big(what: str, size: int, limit: int, *, more: bool = False) -> LimitExceeded:
    """``size`` bytes (at least, with ``more``: the registry sent no length)."""
    amount = f"over {limit} bytes" if more else f"{size} bytes"
    return LimitExceeded(
        f"{what} is {amount}, over lamina's {limit}-byte ({limit >> 20} MiB) cap on manifests",
        hint="such an image cannot be used by lamina (nor by docker or podman); "
        "ask its publisher for a smaller manifest",
    )


def _resumes_at(resp: Response, offset: int) -> bool:
    if resp.status != 206:
        return False
    value = resp.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


async def _drain(
    resp: Response,
    writer: BlobWriter,
    descriptor: Descriptor,
    progress: TransferProgress,
) -> None:
    """Copy the body into ``writer``: 1 MiB writes by one thread of its own, in order.

    The body is read into a ring of 1 MiB buffers made once per blob: while the thread
    hashes and writes the full ones, the next one fills (from a plain-HTTP registry the
    socket is read straight into it, see lighthttp); a buffer is reused once its write
    is done. Joining received pieces instead allocates fresh memory for every megabyte,
    and first-touch page faults made that the largest cost of a pull.

    On a dropped connection what did arrive is written before the error propagates, so
    ``writer.size`` is exactly where a Range request resumes.
    """
    loop = asyncio.get_running_loop()
    ring = [memoryview(bytearray(CHUNK)) for _ in range(_RING)]
    writes: list[asyncio.Future[int] | None] = [None] * _RING  # each buffer's last write
    slot = 0
    fill = 0  # bytes of ring[slot] holding data
    received = writer.size
    reader = into_reader(resp)
    # one thread: the writes reach the writer in the order they were handed over
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-pull")
    try:
        while n := await reader.readinto(ring[slot][fill:]):
            received += n
            # Never store more than the descriptor allows (a hostile registry could
            # otherwise fill the disk before the digest check).
            if received > descriptor.size:
                raise SizeMismatch(
                    f"the registry sent more than the {descriptor.size} bytes expected"
                )
            progress.advance(descriptor, n)
            fill += n
            if fill == CHUNK:
                writes[slot] = loop.run_in_executor(thread, writer.write, ring[slot])
                slot = (slot + 1) % _RING
                fill = 0
                previous = writes[slot]
                if previous is not None:
                    await previous  # the buffer about to be filled again is written
    except network_errors():
        # what did arrive is written (after the writes before it) before the error
        # propagates; the finally below waits for it
        if fill:
            writes[slot] = loop.run_in_executor(thread, writer.write, bytes(ring[slot][:fill]))
        raise
    finally:
        # Never leave a write running on a writer the caller is about to abort, and
        # surface a failed write.
        pending = [w for w in writes if w is not None]
        if pending:
            await asyncio.wait(pending)
        thread.shutdown(wait=False)
    for done in pending:
        done.result()
    if fill:
        await asyncio.to_thread(writer.write, bytes(ring[slot][:fill]))
    if received < descriptor.size:
        raise SizeMismatch(f"the registry sent {received} of the {descriptor.size} bytes expected")


def _conforms(client: RegistryClient) -> tuple[Fetcher, Pusher]:
    """Never called: mypy checks here that RegistryClient plays both roles."""
    return client, client
