"""The registry's storage driver contract: what every backend (filesystem, S3) promises.

Model (after distribution's layout): **blobs** are global and content addressed; a blob
is *visible* in a repository only when that repository holds a **link** to it, so a
cross-repository mount is just :meth:`RegistryStorage.link_blob`. **Manifests** are
stored as blobs too and made visible in a repository by a *revision* (digest -> media
type); **tags** are per-repository pointers to a manifest digest. **Uploads** are
sessions private to the driver until :meth:`RegistryStorage.finish_upload` verifies the
bytes and moves them into place.

Inputs: every digest is an already validated :class:`~lamina.oci.digest.Digest` (a driver
never builds a key from a raw string); repository names and tags are checked with the
distribution-spec grammar (``lamina.oci.reference``, applied by ``routes.check_name`` and
``routes.check_tag``) before they become paths or keys, so ``../x``, ``a//b`` or ``A``
never reach the backend: they raise
:class:`~lamina.registry.errors.RegistryError` ``NAME_INVALID`` / ``TAG_INVALID``, which
the server answers with 400 as is. Upload ids are the driver's own and are
checked against ``routes.UUID_RE``.

Lifecycle: a driver is built once per process (``open_storage``) and is shared by all
request handlers and threads; methods are blocking (the aiohttp server runs them in an
executor) and thread safe. Several processes, on several hosts for remote drivers, may
use one store at the same time: nothing relies on in-process locks.

Atomicity and crash safety: every state change is all-or-nothing. A blob, link, revision
or tag is either absent or complete and verified; a process killed at any point leaves at
worst garbage among uploads (expired with :meth:`iter_uploads` + :meth:`cancel_upload`)
or, for a blob finished but not yet linked, an unreferenced blob that GC reclaims.
Concurrent finishes of uploads with the same digest end with exactly one intact blob
(the first one stays; later ones are dropped as duplicates, each still succeeding).

Races the contract settles: a tag may outlive a concurrently deleted manifest (a lookup
then raises NotFound, which the server answers 404); deleting a blob (GC) while a
repository links it leaves the link dangling, so :meth:`has_link` turns false; a finish
whose blob GC sweeps at that moment stores its own verified copy instead.

Idempotency: putting the same blob, link, manifest or tag again succeeds and changes
nothing; :meth:`tag` overwrites. Deletes of things that are absent raise
:class:`~lamina.errors.NotFound` (the server answers 404), except
:meth:`cancel_upload`, which is idempotent so an expiry sweep can race a client.

Errors: only :mod:`lamina.errors` (NotFound, DigestMismatch, InvalidArgument, ...) and
RegistryError for invalid names; backend failures (OSError, HTTP errors) are wrapped in
a LaminaError with ``raise ... from exc``.

Streaming: blob bytes never sit whole in memory: :meth:`append_upload` consumes an
iterable of chunks or a readable stream in 1 MiB pieces, :meth:`open_blob` returns a
reader, and filesystem drivers expose :meth:`blob_path` so the server can sendfile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from lamina.oci.digest import Digest

CHUNK = 1 << 20  # bytes moved per read/write: bounds memory whatever the blob size


@runtime_checkable
class Readable(Protocol):
    """A byte stream (a file, a socket reader): ``read(n)`` returns b"" at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


# What append_upload accepts: chunks (an aiohttp body pumped through a queue, a test
# list) or a stream read in CHUNK pieces.
UploadData = Iterable[bytes | bytearray | memoryview] | Readable


class BlobReader(Protocol):
    """A bounded read-only stream over (a range of) one blob; close it (or use ``with``)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> BlobReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """An open upload session, as listed for expiry."""

    name: str
    uuid: str
    started: float  # time.time() at start_upload
    size: int


class RegistryStorage(Protocol):
    """A registry's persistent state. See the module docstring for the shared rules."""

    # -- blobs (global, content addressed) -------------------------------------------
    def stat_blob(self, digest: Digest) -> int:
        """Size of the stored blob; NotFound if absent (whatever the links say)."""
        ...

    def open_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> BlobReader:
        """A reader of ``length`` bytes (None = to the end) from ``offset``; NotFound if
        absent, InvalidArgument if the range is outside the blob (the server checks
        ranges first with ``ranges.parse_range`` and answers 416 itself)."""
        ...

    def blob_path(self, digest: Digest) -> str | None:
        """A local path for sendfile (the file is read-only and never rewritten), or None
        for remote drivers; NotFound if absent."""
        ...

    def delete_blob(self, digest: Digest) -> None:
        """Remove the blob's bytes (GC's sweep; links to it become dangling and
        :meth:`has_link` turns false); NotFound if absent."""
        ...

    def iter_blobs(self) -> Iterator[Digest]:
        """Every stored blob (manifests included), in no particular order."""
        ...

    # -- per-repository links ----------------------------------------------------------
    def link_blob(self, name: str, digest: Digest) -> None:
        """Make a stored blob visible in repository ``name`` (creating the repository);
        NotFound if the blob is absent; idempotent."""
        ...

    def has_link(self, name: str, digest: Digest) -> bool:
        """Whether ``digest`` is visible in ``name``: linked there and still stored."""
        ...

    def unlink_blob(self, name: str, digest: Digest) -> None:
        """Hide a blob from one repository (the API's blob DELETE); NotFound if unlinked."""
        ...

    # -- uploads -----------------------------------------------------------------------
    def start_upload(self, name: str) -> str:
        """Open an empty upload session for repository ``name`` and return its id."""
        ...

    def append_upload(self, name: str, uuid: str, data: UploadData) -> int:
        """Append ``data`` to the session and return its new total size. One writer per
        session at a time (the server serialises PATCHes of one upload); NotFound if
        the session does not exist or belongs to another repository."""
        ...

    def upload_size(self, name: str, uuid: str) -> int:
        """Bytes received so far; NotFound like :meth:`append_upload`."""
        ...

    def finish_upload(self, name: str, uuid: str, expected: Digest) -> Digest:
        """Hash the whole upload (streaming) with ``expected``'s algorithm; if it matches,
        move it into the blob store atomically, link it into ``name`` and close the
        session. DigestMismatch otherwise: the session is discarded and nothing becomes
        visible. If the blob already exists the stored copy is kept."""
        ...

    def cancel_upload(self, name: str, uuid: str) -> None:
        """Discard a session; idempotent (a missing session is not an error)."""
        ...

    def iter_uploads(self) -> Iterator[UploadInfo]:
        """Open sessions with their start times, for expiry; sessions whose metadata a
        crash left unreadable are reported with ``started=0.0`` so they expire first."""
        ...

    # -- manifests and tags ------------------------------------------------------------
    def put_manifest(self, name: str, digest: Digest, media_type: str, data: bytes) -> None:
        """Store a manifest (small: the server caps it) under ``digest`` in ``name``;
        DigestMismatch if ``data`` does not hash to ``digest``; idempotent (the latest
        ``media_type`` wins)."""
        ...

    def get_manifest(self, name: str, digest: Digest) -> tuple[str, bytes]:
        """``(media_type, bytes)`` of a manifest of ``name``; NotFound otherwise."""
        ...

    def has_manifest(self, name: str, digest: Digest) -> bool:
        """Whether ``name`` holds a manifest ``digest``."""
        ...

    def delete_manifest(self, name: str, digest: Digest) -> None:
        """Remove the revision from ``name`` and every tag of ``name`` pointing at it
        (like distribution); the bytes stay for GC; NotFound if absent."""
        ...

    def iter_manifests(self, name: str) -> Iterator[Digest]:
        """Manifest digests of ``name`` (for referrers and GC marking), unordered."""
        ...

    def tag(self, name: str, tag: str, digest: Digest) -> None:
        """Point ``tag`` at manifest ``digest`` of ``name`` (overwriting); NotFound if the
        manifest is not in ``name``."""
        ...

    def resolve_tag(self, name: str, tag: str) -> Digest:
        """The manifest digest ``tag`` points at; NotFound if the tag does not exist."""
        ...

    def untag(self, name: str, tag: str) -> None:
        """Remove a tag (the manifest stays); NotFound if absent."""
        ...

    def list_tags(self, name: str) -> list[str]:
        """Tags of ``name`` sorted by code point; NotFound if the repository is unknown."""
        ...

    def list_repositories(self) -> list[str]:
        """Names of repositories holding a link or a manifest, sorted by code point."""
        ...


@runtime_checkable
class SweepsTemporaries(Protocol):
    """A driver whose writers can leave temporaries behind when killed (the filesystem
    driver: write_atomic temp files, half-built upload directories). Remote drivers
    write nothing locally that outlives a process, so they do not implement it.

    :meth:`sweep_temporaries` removes those older than ``older_than`` seconds and returns
    them (``dry_run``: lists only); it never touches a live upload session or anything
    a running write may still rename (those are younger than any sensible age). Server
    start-up and ``lamina registry gc`` call it; it is idempotent and safe beside other
    processes.
    """

    def sweep_temporaries(
        self, older_than: float, *, now: float | None = None, dry_run: bool = False
    ) -> list[str]: ...
