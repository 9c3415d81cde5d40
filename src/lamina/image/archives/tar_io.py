"""The tar side of the image archive formats (OCI image layout, docker-archive).

- :class:`LoadedImage` is what every loader returns: one name (or ``None``) per image.
- :class:`ArchiveOut` writes a deterministic tar (sorted by the caller, uid/gid 0, mtime
  ``SOURCE_DATE_EPOCH`` or 0) straight to a file or stdout, streaming blob content from
  the store's verifying reader.
- :func:`scan_archive` reads an archive tar in one pass: every ``blobs/<alg>/<hex>``
  member is ingested verified against its name, every other regular file (when asked:
  docker-archive) is spooled into the store by its own digest (tar order is not
  guaranteed, so nothing can wait for ``manifest.json``), and the small metadata files
  are kept in memory under a 4 MiB cap.
  A gzip or zstd archive (``docker save | gzip``) is decompressed on the way, with the
  same bomb caps as a layer.

Which blobs an image needs is :mod:`lamina.image.archives.closure`'s job.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from lamina.errors import (
    IntegrityError,
    InvalidArgument,
    InvalidFormat,
    LimitExceeded,
    NotFound,
    Unsafe,
)
from lamina.layers import compression, tar
from lamina.layers.api import Entry, EntryType, Limits, Readable
from lamina.layers.compression import DecompressedStream
from lamina.layers.tar import TarWriter, read_entries
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import ALGORITHMS, Digest
from lamina.oci.layout import blob_relpath
from lamina.oci.reference import Reference
from lamina.store.api import Store

CHUNK = 1 << 20
# The small files an archive names itself with.
METADATA_NAMES = frozenset({"oci-layout", "index.json", "manifest.json", "repositories"})
# An archive is not decompressed, so its byte count is bounded by the file itself; the
# layer cap (64 GiB) would refuse big multi-image saves for no safety gain.
ARCHIVE_LIMITS = Limits(max_layer_bytes=1 << 42)


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One image a loader put in the store: ``name`` is the full reference it was tagged
    with (``docker.io/library/busybox:latest``), or ``None`` when the archive did not name
    it (the caller shows ``descriptor.digest`` instead)."""

    name: str | None
    descriptor: Descriptor


# ---------------------------------------------------------------------------------------
# writing archives


def source_date_epoch() -> int:
    """Archive mtimes: ``SOURCE_DATE_EPOCH`` when set (reproducible-builds.org), else 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidArgument(
            f"SOURCE_DATE_EPOCH={raw!r} is not an integer", hint="set it to Unix seconds"
        ) from exc
    return max(value, 0)


@contextlib.contextmanager
def open_output(dest: str) -> Iterator[BinaryIO]:
    """A binary stream for ``dest``: stdout for ``-``, else a temp file beside ``dest``
    that is fsynced and renamed over it only when the body finishes without error."""
    if dest == "-":
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(dest)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            # /dev/null, a FIFO, /dev/stdout: write into it; renaming a temp file over
            # it would replace the device node itself.
            with open(dest, "wb") as special:
                yield special
            return
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise NotFound(f"directory {parent} does not exist", hint="create it first")
    fd, tmp = tempfile.mkstemp(prefix=".lamina-", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # the rename is durable only once the directory is
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _VerifiedStream:
    """Reads exactly ``size`` bytes of a blob through the store's verifying reader and
    makes sure the reader reaches EOF (which is where the store checks the digest)."""

    def __init__(self, store: Store, desc: Descriptor) -> None:
        self._f = store.open_blob(desc.digest, desc.size)
        self._left = desc.size
        self._desc = desc

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._f.read(want)
        if not data:
            raise IntegrityError(f"blob {self._desc.digest} ended early")
        self._left -= len(data)
        if self._left == 0 and self._f.read(1):
            raise IntegrityError(f"blob {self._desc.digest} is longer than {self._desc.size}")
        return data

    def close(self) -> None:
        self._f.close()


class ArchiveOut:
    """A deterministic tar of an archive's files: uid/gid 0, no user names, mtime
    ``SOURCE_DATE_EPOCH`` or 0, files 0644, directories 0755. Callers add members in
    sorted order; each directory is added once, before its files."""

    def __init__(self, stream: BinaryIO, progress: Progress | None = None) -> None:
        self._tar = TarWriter(_CountingSink(stream, progress) if progress else stream)
        self._mtime_ns = source_date_epoch() * 1_000_000_000
        self._dirs: set[str] = set()

    def _ensure_parents(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent and parent not in self._dirs:
            self._ensure_parents(parent)
            self._dirs.add(parent)
            self._tar.add(Entry(parent, EntryType.DIR, mode=0o755, mtime_ns=self._mtime_ns))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._ensure_parents(name)
        entry = Entry(name, EntryType.FILE, mode=0o644, size=len(data), mtime_ns=self._mtime_ns)
        self._tar.add_bytes(entry, data)

    def add_stream(self, name: str, size: int, stream: Readable) -> None:
        self._ensure_parents(name)
        entry = Entry(name, EntryType.FILE, mode=0o644, size=size, mtime_ns=self._mtime_ns)
        # TarWriter only calls read(n); any reader will do.
        self._tar.add(entry, cast(BinaryIO, stream))

    def add_blob(self, name: str, store: Store, desc: Descriptor) -> None:
        """Copy a blob from the store, verified against ``desc`` while it streams."""
        reader = _VerifiedStream(store, desc)
        try:
            self.add_stream(name, desc.size, reader)
        finally:
            reader.close()

    def close(self) -> None:
        self._tar.close()


# Called as progress(advance_bytes) and, once a total is known, progress(0, total=n).
Progress = Callable[..., None]


class CountingReader:
    """Passes reads through and reports their sizes to ``progress``."""

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, n: int = -1, /) -> bytes:
        data = self._stream.read(n)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def readinto(self, buf: bytearray | memoryview, /) -> int:
        got = int(self._stream.readinto(buf))  # type: ignore[attr-defined]
        if self._progress is not None and got:
            self._progress(got)
        return got

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()


class _CountingSink:
    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def write(self, data: bytes, /) -> int:
        self._stream.write(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)


def blob_path(digest: Digest) -> str:
    """``blobs/<alg>/<encoded>``: safe, since a Digest is validated on construction."""
    return blob_relpath(digest)


def digest_from_blob_path(name: str) -> Digest | None:
    """The digest a ``blobs/<alg>/<encoded>`` path names, or None for any other path."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs" or parts[1] not in ALGORITHMS:
        return None
    try:
        return Digest(parts[1], parts[2])
    except InvalidArgument:
        return None


# ---------------------------------------------------------------------------------------
# reading archives


@dataclass(slots=True)
class ArchiveScan:
    """What one pass over an archive tar found.

    ``metadata`` maps the names in :data:`METADATA_NAMES` to their (capped) bytes;
    ``files`` maps every other regular file's clean path to the digest and size it was
    stored under; ``links`` maps symlink and hardlink paths to the clean path they point at.
    """

    metadata: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[Digest, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def resolve(self, path: str) -> tuple[Digest, int]:
        """The stored digest and size of an archive path, following the archive's own links."""
        clean = clean_archive_path(path)
        for _ in range(16):
            if clean in self.files:
                return self.files[clean]
            target = self.links.get(clean)
            if target is None:
                raise NotFound(
                    f"archive has no file {path!r}", hint="the archive is incomplete or damaged"
                )
            clean = target
        raise InvalidFormat(f"archive path {path!r} is a chain of more than 16 links")


def clean_archive_path(path: str) -> str:
    """A relative, normalised path inside the archive; raises Unsafe for escapes.

    manifest.json paths come from outside: ``../x`` or ``/etc/passwd`` must never name
    anything but a member of this archive (research §4, path traversal).
    """
    if not path or "\x00" in path or path.startswith("/"):
        raise Unsafe(f"archive path {path!r} is absolute or empty")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            # skopeo links <id>/layer.tar -> ../<diffid>.tar: fine while it stays inside.
            if not parts:
                raise Unsafe(f"archive path {path!r} escapes the archive")
            parts.pop()
            continue
        parts.append(part)
    if not parts:
        raise Unsafe(f"archive path {path!r} names the archive root")
    return "/".join(parts)


def _read_capped(stream: Readable, size: int, name: str) -> bytes:
    if size > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            f"{name} is {size} bytes, over the {MAX_DOCUMENT_BYTES}-byte cap",
            hint="this is not a real image archive, or a hostile one",
        )
    chunks: list[bytes] = []
    left = size
    while left > 0:
        data = stream.read(min(left, CHUNK))
        if not data:
            raise InvalidFormat(f"archive member {name} is truncated")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def scan_archive(store: Store, stream: BinaryIO, *, spool_other: bool) -> ArchiveScan:
    """Read an archive tar once, putting its content into the store as it streams.

    ``blobs/<alg>/<hex>`` members are ingested verified against their own name (a
    mismatch raises DigestMismatch and leaves no blob). With ``spool_other``, every other
    regular file (docker-archive layer tars and configs, which only ``manifest.json``
    explains) is ingested under its computed digest. Legacy ``<id>/json`` and
    ``<id>/VERSION`` files carry nothing lamina needs and are skipped.
    The caller holds ``store.lease()``.
    """
    scan = ArchiveScan()
    for entry, content in read_entries(stream, ARCHIVE_LIMITS):
        name = entry.name
        if entry.type is EntryType.DIR:
            continue
        if entry.type in (EntryType.SYMLINK, EntryType.HARDLINK):
            target = entry.linkname
            if entry.type is EntryType.SYMLINK:
                # A symlink's target is relative to its own directory.
                if target.startswith("/"):
                    raise Unsafe(f"archive symlink {name} points outside the archive")
                target = posixpath.join(posixpath.dirname(name), target)
            scan.links[name] = clean_archive_path(target)
            continue
        if entry.type is not EntryType.FILE:
            raise InvalidFormat(f"archive member {name} is a {entry.type.name.lower()}")
        if name in METADATA_NAMES:
            scan.metadata[name] = _read_capped(content, entry.size, name)
            continue
        digest = digest_from_blob_path(name)
        if digest is not None:
            # image-layout.md: blob content MUST match the digest its path names.
            info = store.ingest(content, digest, entry.size)  # type: ignore[arg-type]
            scan.files[name] = (info.digest, info.size)
        elif spool_other and not _legacy_noise(name):
            info = store.ingest(content, None, entry.size)  # type: ignore[arg-type]
            scan.files[name] = (info.digest, info.size)
    return scan


def _legacy_noise(name: str) -> bool:
    base = posixpath.basename(name)
    return "/" in name and base in ("json", "VERSION")


def list_member_names(path: str, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` are member names of the tar file at ``path``.

    A plain tar is walked header by header, seeking over the content, so a 10 GB
    archive costs a few reads; a gzip or zstd archive (``docker save | gzip``) has to be
    decompressed through to its end.
    """
    found: set[str] = set()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise NotFound(f"{path} does not exist") from exc
    with f:
        if compression.detect(f.read(tar.BLOCK_SIZE)):
            f.seek(0)
            plain = compression.open_decompressed(f, None, ARCHIVE_LIMITS)
            for entry, _ in read_entries(plain, ARCHIVE_LIMITS):
                if entry.name in wanted and entry.type is EntryType.FILE:
                    found.add(entry.name)
            return found
        f.seek(0)
        long_name: bytes | None = None
        pax_path: bytes | None = None
        while True:
            offset = f.tell()
            block = f.read(tar.BLOCK_SIZE)
            if len(block) < tar.BLOCK_SIZE or block == tar.ZERO_BLOCK:
                return found
            hdr = tar.decode_header(block, offset)
            body = hdr.size + tar.padding(hdr.size)
            if hdr.typeflag in (tar.PAX_LOCAL, tar.PAX_LOCAL_SOLARIS, tar.GNU_LONGNAME):
                if hdr.size > MAX_DOCUMENT_BYTES:
                    raise LimitExceeded(f"tar extended header at offset {offset} is too big")
                data = f.read(body)[: hdr.size]
                if hdr.typeflag == tar.GNU_LONGNAME:
                    long_name = tar.cstr(data)
                else:
                    pax_path = tar.parse_pax(data, offset).get("path", pax_path)
                continue
            raw = pax_path if pax_path is not None else long_name or hdr.name
            long_name = pax_path = None
            name = raw.decode("utf-8", "surrogateescape").lstrip("/")
            while name.startswith("./"):
                name = name[2:]
            if name in wanted and hdr.typeflag in (b"0", b"\0", b"7"):
                found.add(name)
            f.seek(body, os.SEEK_CUR)


def open_layer(stream: BinaryIO, media_type: str | None = None) -> DecompressedStream:
    """The uncompressed tar of a layer blob: compression from ``media_type`` when it is a
    known layer type, else detected from the first bytes (``.kind`` says which). Capped,
    so a bomb stops with LimitExceeded."""
    kind = mt.LAYER_COMPRESSION.get(media_type or "")
    return compression.open_decompressed(stream, kind)


# ---------------------------------------------------------------------------------------
# names


def repo_tag(ref: Reference) -> str | None:
    """The short ``RepoTags`` form docker prints and writes (``busybox:latest``,
    ``example.com/app:1``); None for a reference without a tag."""
    if ref.tag is None:
        return None
    return f"{ref.familiar_name}:{ref.tag}"


def name_with_tag(repository: str, tag: str) -> str:
    """``repository`` (any tag or digest on it dropped) with ``tag``, normalised."""
    ref = Reference.parse(repository, default_tag=None)
    return str(Reference(ref.registry, ref.repository, tag))


@contextlib.contextmanager
def source_stream(src: str, progress: Progress | None = None) -> Iterator[BinaryIO]:
    """An archive file (``-`` is stdin, left open) for one streaming pass; ``progress``
    first gets the file size as ``total``, then the bytes as they are read."""
    if src == "-":
        yield _uncompressed(CountingReader(sys.stdin.buffer, progress))
        return
    try:
        f = open(src, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise NotFound(f"{src} does not exist") from exc
    except IsADirectoryError as exc:
        raise InvalidArgument(f"{src} is a directory, not an archive file") from exc
    with f:
        if progress is not None:
            progress(0, total=os.fstat(f.fileno()).st_size)
        yield _uncompressed(CountingReader(f, progress))


def _uncompressed(stream: CountingReader) -> BinaryIO:
    # docker load takes gzip'd archives (docker save | gzip); so does lamina, with the
    # decompression caps of layers (the archive is as hostile as any layer).
    return cast(BinaryIO, compression.open_decompressed(stream, None, ARCHIVE_LIMITS))
