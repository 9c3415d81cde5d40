"""The default registry storage driver: plain files under one root directory.

Layout (after distribution's, so an operator can read it)::

    blobs/<alg>/<hex>                                 the bytes, mode 0444, never rewritten
    repositories/<name>/_layers/<alg>/<hex>           link: "<digest>"
    repositories/<name>/_manifests/revisions/<alg>/<hex>   media type of the manifest
    repositories/<name>/_manifests/tags/<tag>         "<digest>"
    _uploads/<uuid>/{name,startedat,data}

Small files are written with :func:`lamina.atomic.write_atomic`; a blob enters ``blobs/``
only by ``os.link`` of a fully written, fsynced and verified file, which fails with
EEXIST instead of replacing: concurrent finishes of one blob keep the first intact copy
and a killed process leaves only ``_uploads/`` garbage. Names and tags are validated with
the distribution-spec grammar before they are joined to the root; repository path
components never start with ``_``, so they cannot collide with the ``_layers`` etc.
directories.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
import uuid as uuidlib
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

from lamina.atomic import fsync_dir, write_all, write_atomic
from lamina.errors import DigestMismatch, InvalidArgument, LaminaError, NotFound
from lamina.oci.digest import ALGORITHMS, Digest, new_hasher
from lamina.oci.reference import is_valid_tag
from lamina.registry.routes import UUID_RE, check_name, check_tag
from lamina.registry.storage.api import CHUNK, Readable, UploadData, UploadInfo

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# Dot-named leftovers in _uploads/ older than this are swept by iter_uploads; no live
# start or cancel takes anywhere near this long.
GARBAGE_AGE = 3600.0
_NEW_UPLOAD = "start a new upload"  # the hint of every unknown-upload NotFound
# lamina.atomic.write_atomic's temp files: ".<name>.<12 hex>.tmp" beside their target. A
# writer killed between create and rename (kill -9, power cut) leaves one behind.
_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def _check_uuid(uuid: str) -> str:
    if UUID_RE.fullmatch(uuid) is None:
        raise NotFound(f"no upload {uuid[:200]!r}", hint=_NEW_UPLOAD)
    return uuid


def _io_error(what: str, exc: OSError) -> LaminaError:
    return LaminaError(f"registry storage: {what}: {exc.strerror or exc}")


def _os_error(exc: OSError, missing: str, doing: str, hint: str | None = None) -> LaminaError:
    """What a failed call on a driver path means: NotFound(``missing``) when the path (or
    a parent of it) is absent, else an I/O failure while ``doing``."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return NotFound(missing, hint=hint)
    return _io_error(doing, exc)


class _RangeReader:
    """Reads at most ``remaining`` bytes of an open file, then reports end of stream."""

    __slots__ = ("_f", "_remaining")

    def __init__(self, f: BinaryIO, remaining: int) -> None:
        self._f = f
        self._remaining = remaining

    def read(self, size: int = -1, /) -> bytes:
        if self._remaining <= 0:
            return b""
        n = self._remaining if size < 0 else min(size, self._remaining)
        data = self._f.read(n)
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _makedirs(path: str, mode: int) -> None:
    """``os.makedirs`` that fsyncs each parent it adds an entry to: a link or tag whose
    file was fsynced must not vanish after a crash because its new directory did."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    fsync_dir(parent)


def _read_quiet(path: str) -> str:
    """A small metadata file's text, or "" if a crash left it missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, ValueError):
        return ""


def _iter_digests(base: str) -> Iterator[Digest]:
    """The digests named ``<base>/<alg>/<hex>`` (blobs, revisions); foreign files skipped."""
    for algorithm in ALGORITHMS:
        try:
            entries = os.listdir(os.path.join(base, algorithm))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            with contextlib.suppress(InvalidArgument):
                yield Digest(algorithm, entry)


def _iter_data(data: UploadData) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(data, Readable):
        while chunk := data.read(CHUNK):
            yield chunk
    else:
        yield from data


class FilesystemStorage:
    """A :class:`~lamina.registry.storage.api.RegistryStorage` on a local directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        for sub in ("blobs", "repositories", "_uploads"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)

    # -- paths (only from validated values) ------------------------------------------
    def _blob(self, digest: Digest) -> str:
        return os.path.join(self.root, "blobs", digest.algorithm, digest.encoded)

    def _repo(self, name: str) -> str:
        return os.path.join(self.root, "repositories", check_name(name))

    def _link(self, name: str, digest: Digest) -> str:
        return os.path.join(self._repo(name), "_layers", digest.algorithm, digest.encoded)

    def _revision(self, name: str, digest: Digest) -> str:
        return os.path.join(
            self._repo(name), "_manifests", "revisions", digest.algorithm, digest.encoded
        )

    def _tags(self, name: str) -> str:
        return os.path.join(self._repo(name), "_manifests", "tags")

    def _upload(self, name: str, uuid: str) -> str:
        check_name(name)
        path = os.path.join(self.root, "_uploads", _check_uuid(uuid))
        try:
            with open(os.path.join(path, "name"), encoding="utf-8") as f:
                owner = f.read()
        except FileNotFoundError:
            owner = None
        except OSError as exc:
            raise _io_error(f"reading upload {uuid}", exc) from exc
        # An upload id is only valid in the repository that started it.
        if owner != name:
            raise NotFound(f"no upload {uuid!r} in {name!r}", hint=_NEW_UPLOAD)
        return path

    def _put_small(self, path: str, data: bytes) -> None:
        try:
            _makedirs(os.path.dirname(path), 0o700)
            write_atomic(path, data, 0o644)
        except OSError as exc:
            raise _io_error(f"writing {path}", exc) from exc

    @staticmethod
    def _read_small(path: str, what: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise _os_error(exc, f"{what} not found", f"reading {what}") from exc

    # -- blobs -------------------------------------------------------------------------
    def stat_blob(self, digest: Digest) -> int:
        try:
            return os.stat(self._blob(digest)).st_size
        except OSError as exc:
            raise _os_error(exc, f"blob {digest} not found", f"stat of blob {digest}") from exc

    def open_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> _RangeReader:
        try:
            fd = os.open(self._blob(digest), _OPEN_FLAGS)
        except OSError as exc:
            raise _os_error(exc, f"blob {digest} not found", f"opening blob {digest}") from exc
        f = os.fdopen(fd, "rb")
        size = os.fstat(fd).st_size
        end = size if length is None else offset + length
        if offset < 0 or (length is not None and length < 0) or offset > size or end > size:
            f.close()
            raise InvalidArgument(f"range {offset}+{length} outside blob {digest} of {size}")
        f.seek(offset)
        return _RangeReader(f, end - offset)

    def blob_path(self, digest: Digest) -> str | None:
        self.stat_blob(digest)
        return self._blob(digest)

    def delete_blob(self, digest: Digest) -> None:
        try:
            os.unlink(self._blob(digest))
        except OSError as exc:
            raise _os_error(exc, f"blob {digest} not found", f"deleting blob {digest}") from exc

    def iter_blobs(self) -> Iterator[Digest]:
        yield from _iter_digests(os.path.join(self.root, "blobs"))

    def _store_file(self, src: str, digest: Digest) -> None:
        """Hard-link a complete, fsynced file into blobs/; an existing copy wins."""
        target = self._blob(digest)
        try:
            _makedirs(os.path.dirname(target), 0o755)
            os.chmod(src, 0o444)
            try:
                os.link(src, target)
            except FileExistsError:
                return  # same digest, same bytes: keep the one readers may already hold
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            raise _io_error(f"storing blob {digest}", exc) from exc

    # -- links -------------------------------------------------------------------------
    def link_blob(self, name: str, digest: Digest) -> None:
        path = self._link(name, digest)
        self.stat_blob(digest)
        if not os.path.exists(path):
            self._put_small(path, str(digest).encode())

    def has_link(self, name: str, digest: Digest) -> bool:
        return os.path.isfile(self._link(name, digest)) and os.path.isfile(self._blob(digest))

    def unlink_blob(self, name: str, digest: Digest) -> None:
        try:
            os.unlink(self._link(name, digest))
        except OSError as exc:
            raise _os_error(
                exc, f"blob {digest} not linked in {name}", f"unlinking {digest} from {name}"
            ) from exc

    # -- uploads -----------------------------------------------------------------------
    def start_upload(self, name: str) -> str:
        check_name(name)
        uuid = str(uuidlib.uuid4())
        base = os.path.join(self.root, "_uploads")
        # Built under a dot name and renamed into place: a session is either whole (name,
        # startedat, data) or dot-named garbage that iter_uploads sweeps.
        staging = os.path.join(base, f".{uuid}.new")
        try:
            os.mkdir(staging, 0o700)
            os.close(os.open(os.path.join(staging, "data"), os.O_WRONLY | os.O_CREAT, 0o600))
            write_atomic(os.path.join(staging, "startedat"), repr(time.time()).encode())
            write_atomic(os.path.join(staging, "name"), name.encode())
            os.rename(staging, os.path.join(base, uuid))
            fsync_dir(base)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise _io_error("starting an upload", exc) from exc
        return uuid

    def append_upload(self, name: str, uuid: str, data: UploadData) -> int:
        path = os.path.join(self._upload(name, uuid), "data")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _os_error(
                exc, f"no upload {uuid!r}", f"opening upload {uuid}", _NEW_UPLOAD
            ) from exc
        try:
            for chunk in _iter_data(data):
                write_all(fd, chunk)
            return os.fstat(fd).st_size
        except OSError as exc:
            raise _io_error(f"writing upload {uuid}", exc) from exc
        finally:
            os.close(fd)

    def upload_size(self, name: str, uuid: str) -> int:
        try:
            return os.stat(os.path.join(self._upload(name, uuid), "data")).st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no upload {uuid!r}", hint=_NEW_UPLOAD) from exc

    def finish_upload(self, name: str, uuid: str, expected: Digest) -> Digest:
        session = self._upload(name, uuid)
        data = os.path.join(session, "data")
        hasher = new_hasher(expected.algorithm)
        try:
            with open(data, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
                os.fsync(f.fileno())  # durable before it becomes visible
        except OSError as exc:
            raise _os_error(
                exc, f"no upload {uuid!r}", f"reading upload {uuid}", _NEW_UPLOAD
            ) from exc
        got = Digest(expected.algorithm, hasher.hexdigest())
        if got != expected:
            self.cancel_upload(name, uuid)
            raise DigestMismatch(
                f"uploaded content has digest {got}, expected {expected}",
                hint="upload the blob again",
            )
        try:
            self._store_file(data, expected)
            self.link_blob(name, expected)
        except NotFound:
            # A GC sweep removed the existing copy between our EEXIST and the link: our
            # verified bytes are still in the session, so store them instead.
            self._store_file(data, expected)
            self.link_blob(name, expected)
        self.cancel_upload(name, uuid)
        return expected

    def cancel_upload(self, name: str, uuid: str) -> None:
        if name == "":
            # iter_uploads names a session a crash left without its name file "": only
            # the expiry sweep cancels those, and only if still nameless.
            path = os.path.join(self.root, "_uploads", _check_uuid(uuid))
            if not os.path.exists(os.path.join(path, "name")):
                self._remove_session(path)
            return
        try:
            session = self._upload(name, uuid)
        except NotFound:
            return
        self._remove_session(session)

    @staticmethod
    def _remove_session(session: str) -> None:
        # Renamed to a dot name first, so a half-removed session never looks valid.
        head, tail = os.path.split(session)
        doomed = os.path.join(head, f".{tail}.deleted-{os.urandom(4).hex()}")
        try:
            os.rename(session, doomed)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _io_error("removing an upload", exc) from exc
        shutil.rmtree(doomed, ignore_errors=True)

    def iter_uploads(self) -> Iterator[UploadInfo]:
        base = os.path.join(self.root, "_uploads")
        now = time.time()
        for entry in os.listdir(base):
            path = os.path.join(base, entry)
            if entry.startswith("."):
                # A start or a removal killed midway; old enough that no live call owns it.
                with contextlib.suppress(OSError):
                    if now - os.lstat(path).st_mtime > GARBAGE_AGE:
                        shutil.rmtree(path, ignore_errors=True)
                continue
            name = _read_quiet(os.path.join(path, "name"))
            try:
                started = float(_read_quiet(os.path.join(path, "startedat")) or 0.0)
            except ValueError:
                started = 0.0
            try:
                size = os.stat(os.path.join(path, "data")).st_size
            except OSError:
                continue  # removed while we looked
            yield UploadInfo(name, entry, started, size)

    def sweep_temporaries(
        self, older_than: float, *, now: float | None = None, dry_run: bool = False
    ) -> list[str]:
        """Remove what killed writers left, and return it (paths relative to the root):
        write_atomic temp files anywhere under ``blobs/`` and ``repositories/``, and the
        dot-named staging or removal directories of ``_uploads/``, whose mtime is more
        than ``older_than`` seconds before ``now``. A live write finishes in far less
        than any sensible age, and a live upload session (``_uploads/<uuid>/``, never
        dot-named) is not entered at all, so neither is ever touched."""
        cutoff = (time.time() if now is None else now) - older_than
        removed: list[str] = []
        for top in ("blobs", "repositories"):
            for dirpath, _dirs, files in os.walk(os.path.join(self.root, top)):
                for entry in files:
                    if _TEMP_RE.fullmatch(entry) is None:
                        continue
                    path = os.path.join(dirpath, entry)
                    with contextlib.suppress(FileNotFoundError):
                        st = os.lstat(path)
                        if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                            if not dry_run:
                                os.unlink(path)
                            removed.append(os.path.relpath(path, self.root))
        base = os.path.join(self.root, "_uploads")
        for entry in os.listdir(base):
            if not entry.startswith("."):
                continue  # a session: expiry (TTL) decides, never this sweep
            path = os.path.join(base, entry)
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime < cutoff:
                    if dry_run:
                        pass
                    elif os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
                    removed.append(os.path.relpath(path, self.root))
        return sorted(removed)

    # -- manifests and tags ------------------------------------------------------------
    def put_manifest(self, name: str, digest: Digest, media_type: str, data: bytes) -> None:
        path = self._revision(name, digest)
        digest.verify(data)
        target = self._blob(digest)
        if not os.path.exists(target):
            try:
                _makedirs(os.path.dirname(target), 0o755)
                write_atomic(target, data, 0o444)
            except OSError as exc:
                raise _io_error(f"storing manifest {digest}", exc) from exc
        self._put_small(path, media_type.encode())

    def get_manifest(self, name: str, digest: Digest) -> tuple[str, bytes]:
        media_type = self._read_small(self._revision(name, digest), f"manifest {digest}")
        try:
            with open(self._blob(digest), "rb") as f:
                return media_type, f.read()
        except OSError as exc:
            raise _os_error(
                exc, f"manifest {digest} not found", f"reading manifest {digest}"
            ) from exc

    def has_manifest(self, name: str, digest: Digest) -> bool:
        return os.path.isfile(self._revision(name, digest)) and os.path.isfile(self._blob(digest))

    def delete_manifest(self, name: str, digest: Digest) -> None:
        try:
            os.unlink(self._revision(name, digest))
        except OSError as exc:
            raise _os_error(
                exc, f"manifest {digest} not found in {name}", f"deleting manifest {digest}"
            ) from exc
        for tag in self._tag_names(name):
            with contextlib.suppress(NotFound):
                if self.resolve_tag(name, tag) == digest:
                    self.untag(name, tag)

    def iter_manifests(self, name: str) -> Iterator[Digest]:
        yield from _iter_digests(os.path.join(self._repo(name), "_manifests", "revisions"))

    def tag(self, name: str, tag: str, digest: Digest) -> None:
        path = os.path.join(self._tags(name), check_tag(tag))
        if not self.has_manifest(name, digest):
            raise NotFound(f"manifest {digest} not found in {name}", hint="put the manifest first")
        self._put_small(path, str(digest).encode())

    def resolve_tag(self, name: str, tag: str) -> Digest:
        path = os.path.join(self._tags(name), check_tag(tag))
        text = self._read_small(path, f"tag {tag!r} of {name}")
        try:
            return Digest.parse(text)
        except InvalidArgument as exc:
            raise NotFound(f"tag {tag!r} of {name} is damaged", hint="tag it again") from exc

    def untag(self, name: str, tag: str) -> None:
        path = os.path.join(self._tags(name), check_tag(tag))
        try:
            os.unlink(path)
        except OSError as exc:
            raise _os_error(
                exc, f"tag {tag!r} of {name} not found", f"removing tag {tag!r}"
            ) from exc

    def _tag_names(self, name: str) -> list[str]:
        try:
            entries = os.listdir(self._tags(name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Skip write_atomic's temp files (".tag.xxxx.tmp"): a valid tag never starts with ".".
        return sorted(e for e in entries if is_valid_tag(e))

    def list_tags(self, name: str) -> list[str]:
        if not self._is_repository(self._repo(name)):
            raise NotFound(f"repository {name} not found")
        return self._tag_names(name)

    @staticmethod
    def _is_repository(path: str) -> bool:
        return os.path.isdir(os.path.join(path, "_layers")) or os.path.isdir(
            os.path.join(path, "_manifests")
        )

    def list_repositories(self) -> list[str]:
        base = os.path.join(self.root, "repositories")
        found: list[str] = []
        for dirpath, dirnames, _files in os.walk(base):
            if self._is_repository(dirpath):
                found.append(os.path.relpath(dirpath, base).replace(os.sep, "/"))
            # Never descend into the driver's own directories.
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(found)
