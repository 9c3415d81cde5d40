"""The S3 registry storage driver: every piece of state is an object in one bucket, so
any number of registry processes on any number of hosts can share the store.

Keys, under an optional prefix (the layout of the filesystem driver)::

    blobs/<alg>/<hex[:2]>/<hex>                          the bytes, written once
    repositories/<name>/_repository                      marker: the repository exists
    repositories/<name>/_layers/<alg>/<hex>              link: "<digest>"
    repositories/<name>/_manifests/revisions/<alg>/<hex> media type of the manifest
    repositories/<name>/_manifests/tags/<tag>            "<digest>"
    _uploads/<uuid>/state                                JSON: owner, start, size, pieces
    _uploads/<uuid>/<offset>-<random>                    the upload's data, in pieces

Uploads: S3 cannot append, and the PATCHes of one upload may reach different processes,
so the state lives in S3. Each append spools into a local temp file (never memory) and
stores what it got as *pieces*: *segments* of at least 5 MiB (S3's minimum part size)
and small *pending* pieces that a later append merges into a segment once they add up to
5 MiB. The state object names the pieces in order and is replaced with ``If-Match`` on
its ETag, so an append that raced another one fails instead of losing data. finish
verifies the digest (the SHA-256 kept in the state when one process hashed every byte,
else by streaming the pieces back), then assembles the blob server-side with a
multipart upload of part copies and ``If-None-Match: *`` so a blob, once there, is never
replaced (concurrent finishes keep the first copy, like the filesystem driver).

Why aiobotocore (:mod:`.client`): of the maintained clients only it has UploadPartCopy, so
finish stays server-side (``python -m bench s3``: 4x16 MiB assembled in 1.7 s, obstore's
round trip 4.2 s; 256 MiB PUT 20 MiB/s as the old client, peak RSS 71 MB vs obstore 98).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from lamina.errors import Conflict, DigestMismatch, InvalidArgument, NotFound
from lamina.oci.digest import ALGORITHMS, Digest, new_hasher
from lamina.oci.reference import is_valid_tag
from lamina.registry.routes import UUID_RE, check_name, check_tag
from lamina.registry.storage.api import CHUNK, UploadData, UploadInfo
from lamina.registry.storage.s3.client import S3Client, S3Error
from lamina.registry.storage.s3.reader import ObjectReader
from lamina.registry.storage.s3.upload_session import UploadState, iter_data

MIN_PART = 5 << 20  # S3: every part but the last is at least 5 MiB
SEGMENT = 16 << 20  # a long append is stored in pieces of this size
SMALL_MAX = 16 << 20  # cap on metadata and manifest objects read whole
# Multipart uploads a killed finish left behind are aborted after this long.
GARBAGE_AGE = 3600.0


def _digest_of_key(key: str) -> Digest | None:
    parts = key.rsplit("/", 3)
    algorithm, encoded = parts[-2], parts[-1]
    if algorithm not in ALGORITHMS and len(parts) >= 3:
        algorithm = parts[-3]  # blobs/<alg>/<xx>/<hex>
    try:
        return Digest(algorithm, encoded)
    except InvalidArgument:
        return None  # a foreign object: not ours to report


class S3Storage:
    """A :class:`~lamina.registry.storage.api.RegistryStorage` in an S3 bucket."""

    def __init__(self, client: S3Client, prefix: str = "") -> None:
        self.client = client
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        # uuid -> (bytes hashed, sha256 of them): lets a process that saw every byte of
        # an upload finish it without reading it back.
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Fail now, with S3's own reason, if the bucket is missing or the credentials are
        wrong (a one-key listing: unlike HEAD, its error answer names the cause)."""
        next(self.client.list_objects(self.prefix), None)

    # -- keys (only from validated values) ----------------------------------------------
    def _blob(self, d: Digest) -> str:
        return f"{self.prefix}blobs/{d.algorithm}/{d.encoded[:2]}/{d.encoded}"

    def _repo(self, name: str) -> str:
        return f"{self.prefix}repositories/{check_name(name)}/"

    def _link(self, name: str, d: Digest) -> str:
        return f"{self._repo(name)}_layers/{d.algorithm}/{d.encoded}"

    def _revision(self, name: str, d: Digest) -> str:
        return f"{self._repo(name)}_manifests/revisions/{d.algorithm}/{d.encoded}"

    def _tag(self, name: str, tag: str) -> str:
        return f"{self._repo(name)}_manifests/tags/{check_tag(tag)}"

    def _session(self, uuid: str) -> str:
        return f"{self.prefix}_uploads/{uuid}/"

    def _exists(self, key: str) -> bool:
        return self.client.head(key) is not None

    def _mark_repository(self, name: str) -> None:
        self.client.put(f"{self._repo(name)}_repository", b"")

    def _read_text(self, key: str, what: str) -> str:
        try:
            return self.client.get_bytes(key, SMALL_MAX).decode("utf-8", "replace")
        except NotFound as exc:
            raise NotFound(f"{what} not found") from exc

    def _put_if_absent(self, key: str, body: bytes | None) -> None:
        """PUT with ``If-None-Match: *``: an object already there is kept as it is."""
        try:
            self.client.put(key, body, if_none_match=True)
        except S3Error as exc:
            if exc.status != 412:
                raise

    # -- blobs ---------------------------------------------------------------------------
    def stat_blob(self, digest: Digest) -> int:
        info = self.client.head(self._blob(digest))
        if info is None:
            raise NotFound(f"blob {digest} not found")
        return info.size

    def open_blob(self, digest: Digest, offset: int = 0, length: int | None = None) -> ObjectReader:
        try:
            return ObjectReader(self.client, self._blob(digest), offset, length)
        except NotFound as exc:
            raise NotFound(f"blob {digest} not found") from exc
        except InvalidArgument as exc:
            raise InvalidArgument(f"range {offset}+{length} outside blob {digest}") from exc

    def blob_path(self, digest: Digest) -> str | None:
        self.stat_blob(digest)
        return None  # remote: the server streams open_blob instead of sendfile

    def delete_blob(self, digest: Digest) -> None:
        self.stat_blob(digest)
        self.client.delete(self._blob(digest))

    def iter_blob_stats(self) -> Iterator[tuple[Digest, int, float]]:
        """``(digest, size, stored at)`` of every blob, from the listing alone."""
        for info in self.client.list_objects(f"{self.prefix}blobs/"):
            if isinstance(info, str):
                continue
            d = _digest_of_key(info.key)
            if d is not None and info.key == self._blob(d):
                yield d, info.size, info.modified

    def iter_blobs(self) -> Iterator[Digest]:
        for d, _size, _modified in self.iter_blob_stats():
            yield d

    # -- links ---------------------------------------------------------------------------
    def link_blob(self, name: str, digest: Digest) -> None:
        key = self._link(name, digest)
        self.stat_blob(digest)
        self.client.put(key, str(digest).encode())
        self._mark_repository(name)

    def has_link(self, name: str, digest: Digest) -> bool:
        return self._exists(self._link(name, digest)) and self._exists(self._blob(digest))

    def unlink_blob(self, name: str, digest: Digest) -> None:
        key = self._link(name, digest)
        if self.client.head(key) is None:
            raise NotFound(f"blob {digest} not linked in {name}")
        self.client.delete(key)

    # -- uploads -------------------------------------------------------------------------
    def _read_state(self, name: str, uuid: str) -> tuple[UploadState, str]:
        check_name(name)
        if UUID_RE.fullmatch(uuid) is None:
            raise NotFound(f"no upload {uuid[:200]!r}", hint="start a new upload")
        try:
            data, etag = self.client.get_versioned(self._session(uuid) + "state", SMALL_MAX)
            state = UploadState.parse(data)
        except (NotFound, InvalidArgument) as exc:
            raise NotFound(f"no upload {uuid!r}", hint="start a new upload") from exc
        # An upload id is only valid in the repository that started it.
        if state.name != name:
            raise NotFound(f"no upload {uuid!r} in {name!r}", hint="start a new upload")
        return state, etag

    def start_upload(self, name: str) -> str:
        check_name(name)
        uuid = str(uuidlib.uuid4())
        state = UploadState(name, time.time(), 0, (), (), hashlib.sha256().hexdigest())
        self._put_if_absent(self._session(uuid) + "state", state.to_bytes())
        return uuid

    def _put_piece(self, uuid: str, offset: int, f: IO[bytes], length: int) -> str:
        name = f"{offset:016d}-{os.urandom(4).hex()}"
        f.seek(0, os.SEEK_END)
        if f.tell() != length:  # the piece is the whole file: botocore sends it from 0
            raise InvalidArgument(f"upload spool has {f.tell()} bytes, not {length}")
        self.client.put(self._session(uuid) + name, f)
        return name

    def _fetch_into(self, uuid: str, pieces: tuple[tuple[str, int], ...], out: IO[bytes]) -> None:
        for piece, size in pieces:
            with ObjectReader(self.client, self._session(uuid) + piece) as r:
                got = 0
                while block := r.read(CHUNK):
                    out.write(block)
                    got += len(block)
            if got != size:
                raise InvalidArgument(f"upload piece {piece} has {got} bytes, not {size}")

    def append_upload(self, name: str, uuid: str, data: UploadData) -> int:
        state, etag = self._read_state(name, uuid)
        hasher = self._resume_hash(uuid, state)
        segments = list(state.segments)
        pending = list(state.pending)
        pending_size = sum(n for _k, n in pending)
        added: list[str] = []  # pieces stored by this call: removed if it fails
        merged: list[str] = []  # pending pieces folded into a segment: removed once done
        size = state.size

        pool: ThreadPoolExecutor | None = None
        # One segment is stored in the background while the next one spools: the client
        # keeps sending instead of waiting for each S3 PUT.
        inflight: Future[tuple[str, int]] | None = None

        def settle() -> None:
            nonlocal inflight
            if inflight is not None:
                future, inflight = inflight, None
                key, total = future.result()
                added.append(key)
                segments.append((key, total))

        def submit(spool: IO[bytes], length: int) -> None:
            nonlocal pending, pending_size, pool, inflight
            settle()  # segments stay in order, and at most two spool files exist
            merge = tuple(pending)
            merged.extend(k for k, _n in merge)
            offset = size - pending_size - length
            pending, pending_size = [], 0
            if pool is None:
                pool = ThreadPoolExecutor(1, thread_name_prefix="lamina-s3-segment")
            inflight = pool.submit(self._segment, uuid, offset, spool, length, merge)

        new: UploadState | None = None
        spool: IO[bytes] | None = None
        try:
            try:
                spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to a segment job
                spooled = 0
                for chunk in iter_data(data):
                    spool.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    spooled += len(chunk)
                    size += len(chunk)
                    if pending_size + spooled >= SEGMENT:
                        spool.flush()
                        submit(spool, spooled)  # the segment job owns (and closes) it
                        spool = tempfile.TemporaryFile()  # noqa: SIM115 - same
                        spooled = 0
                spool.flush()
                if pending_size + spooled >= MIN_PART:
                    submit(spool, spooled)
                    spool = None
                elif spooled:
                    added.append(self._put_piece(uuid, size - spooled, spool, spooled))
                    pending.append((added[-1], spooled))
                settle()
            finally:
                if spool is not None:
                    spool.close()
                if inflight is not None:  # failing: let it end, so its piece is removed too
                    with contextlib.suppress(Exception):
                        added.append(inflight.result()[0])
                if pool is not None:
                    pool.shutdown(wait=True)
            new = UploadState(
                state.name,
                state.started,
                size,
                tuple(segments),
                tuple(pending),
                None if hasher is None else hasher.hexdigest(),
            )
            self._commit_state(uuid, etag, new)
        except BaseException:
            # A commit that failed on our side may still have landed: then it stands.
            if new is None or not self._state_is(uuid, new):
                with contextlib.suppress(S3Error, OSError):
                    self.client.delete_many([self._session(uuid) + k for k in added])
                raise
        with contextlib.suppress(S3Error, OSError):
            self.client.delete_many([self._session(uuid) + k for k in merged])
        if hasher is not None:
            with self._lock:
                self._hashes[uuid] = (size, hasher)
                while len(self._hashes) > 256:
                    self._hashes.popitem(last=False)
        return size

    def _state_is(self, uuid: str, state: UploadState) -> bool:
        try:
            return self.client.get_bytes(self._session(uuid) + "state", SMALL_MAX) == (
                state.to_bytes()
            )
        except (S3Error, NotFound, InvalidArgument, OSError):
            return False

    def _commit_state(self, uuid: str, etag: str, new: UploadState) -> None:
        """Replace the state only if nobody else did since we read it (``If-Match``)."""
        try:
            self.client.put(
                self._session(uuid) + "state",
                new.to_bytes(),
                if_match=etag,
            )
        except S3Error as exc:
            # 412 also answers a retry of our own PUT whose first answer was lost.
            if exc.status != 412:
                raise
            if self._state_is(uuid, new):
                return
            raise Conflict(
                f"upload {uuid} was changed by another request at the same time",
                hint="send the chunks of one upload one after another",
            ) from exc

    def _segment(
        self,
        uuid: str,
        offset: int,
        spool: IO[bytes],
        length: int,
        merge: tuple[tuple[str, int], ...],
    ) -> tuple[str, int]:
        """Store the small pieces ``merge`` followed by the spool's bytes as one piece
        (S3 parts before the last must be at least 5 MiB); closes the spool."""
        try:
            if not merge:
                return self._put_piece(uuid, offset, spool, length), length
            with tempfile.TemporaryFile() as seg:
                self._fetch_into(uuid, merge, seg)
                spool.seek(0)
                left = length
                while left > 0 and (block := spool.read(min(CHUNK, left))):
                    seg.write(block)
                    left -= len(block)
                seg.flush()
                total = sum(n for _k, n in merge) + length
                return self._put_piece(uuid, offset, seg, total), total
        finally:
            spool.close()

    def _resume_hash(self, uuid: str, state: UploadState) -> Any:
        if state.size == 0:
            return hashlib.sha256()
        with self._lock:
            cached = self._hashes.get(uuid)
        if cached is None or cached[0] != state.size or state.sha256 is None:
            return None  # another process appended: finish reads the bytes back
        if cached[1].hexdigest() != state.sha256:
            return None
        return cached[1].copy()

    def upload_size(self, name: str, uuid: str) -> int:
        return self._read_state(name, uuid)[0].size

    def finish_upload(self, name: str, uuid: str, expected: Digest) -> Digest:
        state, _etag = self._read_state(name, uuid)
        pieces = state.segments + state.pending
        if expected.algorithm == "sha256" and state.sha256 is not None:
            got = Digest("sha256", state.sha256)
        else:
            hasher = new_hasher(expected.algorithm)
            for piece, _size in pieces:
                with ObjectReader(self.client, self._session(uuid) + piece) as r:
                    while block := r.read(CHUNK):
                        hasher.update(block)
            got = Digest(expected.algorithm, hasher.hexdigest())
        if got != expected:
            self.cancel_upload(name, uuid)
            raise DigestMismatch(
                f"uploaded content has digest {got}, expected {expected}",
                hint="upload the blob again",
            )
        self._store(uuid, state, expected)
        try:
            self.link_blob(name, expected)
        except NotFound:
            # GC swept the copy that was there a moment ago: store our verified bytes.
            self._store(uuid, state, expected)
            self.link_blob(name, expected)
        self.cancel_upload(name, uuid)
        return expected

    def _store(self, uuid: str, state: UploadState, digest: Digest) -> None:
        key = self._blob(digest)
        if self.client.head(key) is not None:
            return  # the stored copy stays (readers may hold it)
        pieces = list(state.segments)
        if len(state.pending) > 1:
            # Parts before the last must be >= 5 MiB: fold the small pieces into one.
            with tempfile.TemporaryFile() as f:
                self._fetch_into(uuid, state.pending, f)
                f.flush()
                total = sum(n for _k, n in state.pending)
                pieces.append((self._put_piece(uuid, state.size - total, f, total), total))
        else:
            pieces.extend(state.pending)
        src = [self._session(uuid) + k for k, _n in pieces]
        try:
            if not src:
                self._put_if_absent(key, None)
            elif len(src) == 1:
                self.client.copy(src[0], key, if_none_match=True)
            else:
                self._multipart_copy(key, src)
        except S3Error as exc:
            if exc.status != 412:  # 412: a concurrent finish stored it first
                raise

    def _multipart_copy(self, key: str, sources: list[str]) -> None:
        upload_id = self.client.create_multipart(key)
        try:
            etags = [
                self.client.upload_part_copy(key, upload_id, number, src)
                for number, src in enumerate(sources, 1)
            ]
            try:
                self.client.complete_multipart(key, upload_id, etags, if_none_match=True)
            except NotFound:
                # A retry of a completion whose answer was lost: the first one worked.
                if not self._exists(key):
                    raise
        except BaseException:
            with contextlib.suppress(S3Error, OSError, NotFound):
                self.client.abort_multipart(key, upload_id)
            raise

    def cancel_upload(self, name: str, uuid: str) -> None:
        if name:
            check_name(name)
        if UUID_RE.fullmatch(uuid) is None:
            return
        session = self._session(uuid)
        try:
            owner = UploadState.parse(self.client.get_bytes(session + "state", SMALL_MAX)).name
        except (NotFound, InvalidArgument):
            owner = None  # absent, or damaged: garbage anyone may clear
        if owner is not None and owner != name:
            return  # not this repository's upload: as if it did not exist
        with self._lock:
            self._hashes.pop(uuid, None)
        # The state goes first, so a half-removed session is never seen as valid.
        self.client.delete(session + "state")
        keys = [i.key for i in self.client.list_objects(session) if not isinstance(i, str)]
        self.client.delete_many(keys)

    def iter_uploads(self) -> Iterator[UploadInfo]:
        self._sweep_multipart()
        base = f"{self.prefix}_uploads/"
        # A full listing, not a delimited one: some servers (SeaweedFS) keep listing the
        # "directory" of a removed session as a common prefix.
        sessions: dict[str, bool] = {}
        for info in self.client.list_objects(base):
            if isinstance(info, str):
                continue
            uuid, _sep, rest = info.key[len(base) :].partition("/")
            if UUID_RE.fullmatch(uuid) is not None:
                sessions[uuid] = sessions.get(uuid, False) or rest == "state"
        for uuid, has_state in sessions.items():
            state: UploadState | None = None
            if has_state:
                with contextlib.suppress(NotFound, InvalidArgument):
                    state = UploadState.parse(
                        self.client.get_bytes(self._session(uuid) + "state", SMALL_MAX)
                    )
            if state is None:
                # Pieces without a readable state: a crash during cancel; expire it first.
                yield UploadInfo("", uuid, 0.0, 0)
            elif UUID_RE.fullmatch(uuid):
                yield UploadInfo(state.name, uuid, state.started, state.size)

    def _sweep_multipart(self) -> None:
        """Abort multipart uploads a killed finish left (S3 keeps them, invisible)."""
        now = time.time()
        for key, upload_id, initiated in self.client.list_multipart(f"{self.prefix}blobs/"):
            if now - initiated > GARBAGE_AGE:
                with contextlib.suppress(S3Error, NotFound):
                    self.client.abort_multipart(key, upload_id)

    # -- manifests and tags ---------------------------------------------------------------
    def put_manifest(self, name: str, digest: Digest, media_type: str, data: bytes) -> None:
        key = self._revision(name, digest)
        digest.verify(data)
        self._put_if_absent(self._blob(digest), data)
        self.client.put(key, media_type.encode())
        self._mark_repository(name)

    def get_manifest(self, name: str, digest: Digest) -> tuple[str, bytes]:
        media_type = self._read_text(self._revision(name, digest), f"manifest {digest}")
        try:
            return media_type, self.client.get_bytes(self._blob(digest), SMALL_MAX)
        except NotFound as exc:
            raise NotFound(f"manifest {digest} not found") from exc

    def has_manifest(self, name: str, digest: Digest) -> bool:
        return self._exists(self._revision(name, digest)) and self._exists(self._blob(digest))

    def delete_manifest(self, name: str, digest: Digest) -> None:
        key = self._revision(name, digest)
        if self.client.head(key) is None:
            raise NotFound(f"manifest {digest} not found in {name}")
        self.client.delete(key)
        for tag in self._tag_names(name):
            with contextlib.suppress(NotFound):
                if self.resolve_tag(name, tag) == digest:
                    self.untag(name, tag)

    def iter_manifests(self, name: str) -> Iterator[Digest]:
        base = f"{self._repo(name)}_manifests/revisions/"
        for info in self.client.list_objects(base):
            if not isinstance(info, str):
                d = _digest_of_key(info.key)
                if d is not None and info.key == self._revision(name, d):
                    yield d

    def tag(self, name: str, tag: str, digest: Digest) -> None:
        key = self._tag(name, tag)
        if not self.has_manifest(name, digest):
            raise NotFound(f"manifest {digest} not found in {name}", hint="put the manifest first")
        self.client.put(key, str(digest).encode())

    def resolve_tag(self, name: str, tag: str) -> Digest:
        text = self._read_text(self._tag(name, tag), f"tag {tag!r} of {name}")
        try:
            return Digest.parse(text)
        except InvalidArgument as exc:
            raise NotFound(f"tag {tag!r} of {name} is damaged", hint="tag it again") from exc

    def untag(self, name: str, tag: str) -> None:
        key = self._tag(name, tag)
        if self.client.head(key) is None:
            raise NotFound(f"tag {tag!r} of {name} not found")
        self.client.delete(key)

    def _tag_names(self, name: str) -> list[str]:
        base = f"{self._repo(name)}_manifests/tags/"
        names = (
            info.key[len(base) :]
            for info in self.client.list_objects(base, delimiter="/")
            if not isinstance(info, str)
        )
        return sorted(n for n in names if is_valid_tag(n))

    def list_tags(self, name: str) -> list[str]:
        if self.client.head(f"{self._repo(name)}_repository") is None:
            raise NotFound(f"repository {name} not found")
        return self._tag_names(name)

    def list_repositories(self) -> list[str]:
        base = f"{self.prefix}repositories/"
        found: list[str] = []
        todo = [base]
        while todo:
            directory = todo.pop()
            for entry in self.client.list_objects(directory, delimiter="/"):
                if isinstance(entry, str):
                    # Never descend into the driver's own _layers/_manifests prefixes.
                    if not entry[len(directory) :].startswith("_"):
                        todo.append(entry)
                elif entry.key == directory + "_repository":
                    found.append(directory[len(base) : -1])
        return sorted(found)
