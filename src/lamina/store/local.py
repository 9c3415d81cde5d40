"""LocalStore: the content store on a local filesystem (the only module that writes blobs).

Layout under the root (ARCHITECTURE.md section 4; the names are
:mod:`lamina.stateroot`'s), every directory 0700::

    blobs/<algorithm>/<hex>   blob files, mode 0444, named only from a validated Digest
    ingest/<random>.tmp       temp files of open writers, each flock'ed by its writer
    refs.json                 the ref index (see refs.py)
    locks/gc.lock             leases hold LOCK_SH, gc holds LOCK_EX
    locks/refs.lock           ref updates hold LOCK_EX

Ingest: stream into a temp file while hashing, flush, fsync, check size and digest,
chmod 0444, rename into ``blobs/``, fsync the directory. A writer holds a lease for its
whole life, so gc never runs while a temp file is being written, and holds an flock on
its temp file, so a gc can tell a dead writer's temp file (unlocked) from a live one.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, BinaryIO

from lamina.atomic import fsync_dir, write_all
from lamina.errors import (
    Conflict,
    DigestMismatch,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SizeMismatch,
)
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import ALGORITHMS, Digest, Digester
from lamina.stateroot import GC_LOCK, REFS_LOCK, blobs_dir, ingest_dir, locks_dir
from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, GCPlan, GCResult, GCRoots
from lamina.store.locks import SharedLease, exclusive, shared_lease
from lamina.store.refs import RefFile, check_ref_name
from lamina.store.verify import CHUNK, DAMAGED_HINT, VerifyingReader
from lamina.sysinfo import default_root as default_root  # noqa: PLC0414 (re-export)

TEMP_SUFFIX = ".tmp"
_REFS_HINT = "list refs with `lamina images`"


def _make_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise InvalidArgument(
                f"{path} exists and is not a directory", hint="pick another --root"
            ) from None
        return
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; make it exact


def _close_quietly(fd: int) -> None:
    with suppress(OSError):
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _abandon(fd: int, path: str, lease: SharedLease) -> None:
    """Finalizer of a writer dropped without commit or abort."""
    _close_quietly(fd)
    _unlink_quietly(path)
    lease.release()


class LocalBlobWriter:
    """An open ingest into a LocalStore (not shared between threads)."""

    def __init__(self, store: LocalStore, algorithm: str) -> None:
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unsupported digest algorithm {algorithm!r}", hint="use sha256 or sha512"
            )
        self._store = store
        self._digester = Digester(algorithm)
        self._buf = bytearray()
        self._lease = store._lease_lock()
        self._lease.acquire()
        try:
            self._fd, self._path = self._create_temp()
        except BaseException:
            self._lease.release()
            raise
        self._done = False
        self._finalizer = weakref.finalize(self, _abandon, self._fd, self._path, self._lease)

    def _create_temp(self) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        while True:
            path = os.path.join(self._store._ingest_dir, os.urandom(16).hex() + TEMP_SUFFIX)
            fd = os.open(path, flags, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:
                return fd, path
            # A gc that does not honour leases swept it between open and flock: retry.
            os.close(fd)

    @property
    def size(self) -> int:
        return self._digester.size

    @property
    def algorithm(self) -> str:
        return self._digester.algorithm

    def write(self, data: bytes | memoryview, /) -> int:
        if self._done:
            raise Conflict("write to a blob writer that was committed or aborted")
        n = len(data)
        self._digester.update(data)
        if not self._buf and n >= CHUNK:
            write_all(self._fd, data)
        else:
            self._buf += data
            if len(self._buf) >= CHUNK:
                self._flush()
        return n

    def _flush(self) -> None:
        if self._buf:
            write_all(self._fd, self._buf)
            self._buf.clear()

    def commit(self, expected: Digest | None = None, size: int | None = None) -> BlobInfo:
        if self._done:
            raise Conflict("commit of a blob writer that was committed or aborted")
        try:
            return self._commit(expected, size)
        finally:
            self.abort()  # no-op after a successful rename; else drops the temp file

    def _commit(self, expected: Digest | None, size: int | None) -> BlobInfo:
        if expected is not None and expected.algorithm != self.algorithm:
            raise InvalidArgument(
                f"expected digest {expected} does not use this writer's {self.algorithm}",
                hint=f"open the writer with writer({expected.algorithm!r})",
            )
        self._flush()
        written = self.size
        # image-spec descriptor.md: size and digest MUST both match the content.
        if size is not None and size != written:
            raise SizeMismatch(f"blob is {written} bytes, expected {size}")
        got = self._digester.digest()
        if expected is not None and got != expected:
            raise DigestMismatch(f"blob has digest {got}, expected {expected}")
        if os.fstat(self._fd).st_size != written:
            raise SizeMismatch(f"temp file {self._path} does not hold the {written} bytes written")
        os.fsync(self._fd)
        info = BlobInfo(got, written)
        target = self._store._path(got)
        try:
            st = os.lstat(target)
            keep = stat.S_ISREG(st.st_mode) and st.st_size == written
        except FileNotFoundError:
            keep = False
        if keep:
            return info  # the same content is there: leave it, drop the temp file
        os.fchmod(self._fd, 0o444)
        os.rename(self._path, target)  # atomic; a racing ingest of the same blob is harmless
        self._path = ""
        fsync_dir(os.path.dirname(target))
        return info

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._finalizer.detach()
        _close_quietly(self._fd)
        if self._path:
            _unlink_quietly(self._path)
        self._lease.release()

    def __enter__(self) -> LocalBlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class LocalStore:
    """Content store under one root directory; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._blobs_dir = blobs_dir(self.root)
        self._ingest_dir = ingest_dir(self.root)
        self._locks_dir = locks_dir(self.root)
        self._gc_lock = os.path.join(self._locks_dir, GC_LOCK)
        try:
            os.makedirs(os.path.dirname(self.root), exist_ok=True)
            _make_dir(self.root)
            for path in (self._blobs_dir, self._ingest_dir, self._locks_dir):
                _make_dir(path)
            for algorithm in ALGORITHMS:
                _make_dir(os.path.join(self._blobs_dir, algorithm))
        except OSError as exc:
            raise InvalidArgument(
                f"cannot use {self.root} as a store root: {exc.strerror}",
                hint="pass a writable directory with --root or LAMINA_ROOT",
            ) from exc
        self._refs = RefFile(self.root, os.path.join(self._locks_dir, REFS_LOCK))
        self._gc_holder: int | None = None  # the thread inside gc_lock, if any

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    # -- paths ---------------------------------------------------------------------------

    def _path(self, digest: Digest) -> str:
        # ARCHITECTURE.md section 5: only a validated Digest ever becomes a path.
        if not isinstance(digest, Digest):
            raise InvalidArgument(f"expected a Digest, got {type(digest).__name__}")
        return os.path.join(self._blobs_dir, digest.algorithm, digest.encoded)

    def _lease_lock(self) -> SharedLease:
        return shared_lease(self._gc_lock)

    # -- Provider ------------------------------------------------------------------------

    def _stat(self, digest: Digest) -> os.stat_result:
        try:
            st = os.lstat(self._path(digest))
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"blob {digest} in {self.root} is not a regular file")
        return st

    def has(self, digest: Digest) -> bool:
        try:
            self._stat(digest)
        except NotFound:
            return False
        return True

    def info(self, digest: Digest) -> BlobInfo:
        return BlobInfo(digest, self._stat(digest).st_size)

    def blob_path(self, digest: Digest) -> str:
        """Path of the (read-only) blob file; NotFound if absent."""
        self._stat(digest)
        return self._path(digest)

    def _open_verifying(self, digest: Digest, size: int | None) -> VerifyingReader:
        try:
            fd = os.open(self._path(digest), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"blob {digest} in {self.root} is not a regular file")
            if size is not None and st.st_size != size:
                raise SizeMismatch(
                    f"blob {digest} is {st.st_size} bytes on disk, expected {size}",
                    hint=DAMAGED_HINT,
                )
            return VerifyingReader(fd, digest, st.st_size if size is None else size)
        except BaseException:
            os.close(fd)
            raise

    def open_blob(self, digest: Digest, size: int | None = None) -> VerifyingReader:
        """A verifying reader; see verify.py."""
        return self._open_verifying(digest, size)

    def read_blob(
        self, digest: Digest, max_size: int = MAX_METADATA_BYTES, *, size: int | None = None
    ) -> bytes:
        with self._open_verifying(digest, size) as reader:
            if reader.size > max_size:
                raise LimitExceeded(
                    f"blob {digest} is {reader.size} bytes, over the {max_size}-byte cap"
                )
            return reader.readall()

    # -- Ingester ------------------------------------------------------------------------

    def writer(self, algorithm: str = "sha256") -> LocalBlobWriter:
        return LocalBlobWriter(self, algorithm)

    def ingest(
        self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None
    ) -> BlobInfo:
        """Copy a stream into the store, verifying; reads at most ``size + 1`` bytes."""
        if size is not None and size < 0:
            raise InvalidArgument(f"negative blob size {size}")
        algorithm = expected.algorithm if expected is not None else "sha256"
        if expected is not None and size is not None:
            try:
                present = self.info(expected).size == size
            except NotFound:
                present = False
            if present:
                # Cheap no-op: hash the input without writing it, still verifying it.
                digester = Digester(algorithm)
                _pump(stream, digester.update, size)
                _check(digester.digest(), digester.size, expected, size)
                return BlobInfo(expected, size)
        with self.writer(algorithm) as w:
            _pump(stream, w.write, size)
            return w.commit(expected, size)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> BlobInfo:
        algorithm = expected.algorithm if expected is not None else "sha256"
        with self.writer(algorithm) as w:
            w.write(data)
            return w.commit(expected, len(data))

    # -- RefStore ------------------------------------------------------------------------

    def get_ref(self, name: str) -> Descriptor:
        target = self._refs.get(name)
        if target is None:
            raise NotFound(f"ref {name!r} not found", hint=_REFS_HINT)
        return target

    def set_ref(self, name: str, target: Descriptor) -> None:
        check_ref_name(name)
        if not isinstance(target, Descriptor):
            raise InvalidArgument(f"a ref must name a Descriptor, got {type(target).__name__}")
        value = target.to_json()

        def mutate(refs: dict[str, Any]) -> tuple[bool, None]:
            if refs.get(name) == value:
                return False, None
            refs[name] = value
            return True, None

        # Under a lease: a gc that marked before this update would sweep what it names.
        with self.lease():
            self._refs.update(mutate)

    def delete_ref(self, name: str) -> None:
        def mutate(refs: dict[str, Any]) -> tuple[bool, None]:
            if refs.pop(name, None) is None:
                raise NotFound(f"ref {name!r} not found", hint=_REFS_HINT)
            return True, None

        self._refs.update(mutate)

    def list_refs(self) -> dict[str, Descriptor]:
        return self._refs.read()

    # -- leases and gc -------------------------------------------------------------------

    def lease(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold while creating blobs that refs will name; blocks only while gc runs.

        Re-entrant, and shared by all threads and LocalStores of this process on this root.
        """
        return _leased(self._lease_lock(), timeout)

    @contextmanager
    def gc_lock(self, timeout: float | None = None) -> Iterator[None]:
        """The exclusive side of the lease lock, for :meth:`plan_gc` and :meth:`apply_gc`.

        Waits for every lease in every process (at most ``timeout`` seconds, then
        Conflict). Raises Conflict at once if the calling thread holds a lease itself.
        Re-entrant in the thread that holds it (a second flock would wait on itself).
        """
        me = threading.get_ident()
        if self._gc_holder == me:
            yield
            return
        if self._lease_lock().held_by_current_thread():
            raise Conflict(
                "gc cannot run while this thread holds a store lease",
                hint="call gc outside `with store.lease()`",
            )
        with exclusive(
            self._gc_lock,
            timeout,
            what="the store's gc lock (other lamina processes hold leases)",
            hint="wait for running imports, pulls and builds to finish, then try again",
        ):
            self._gc_holder = me
            try:
                yield
            finally:
                self._gc_holder = None

    def _check_gc_lock(self, what: str) -> None:
        if self._gc_holder != threading.get_ident():
            raise Conflict(
                f"{what} must run inside store.gc_lock()",
                hint="wrap the plan and its apply in `with store.gc_lock():`",
            )

    def plan_gc(
        self, roots: GCRoots | None = None, *, only: frozenset[Digest] | None = None
    ) -> GCPlan:
        """What gc removes (see :meth:`lamina.store.api.Store.plan_gc`)."""
        from lamina.store.gc import manifests_naming, reachable  # the manifest model

        self._check_gc_lock("plan_gc")
        roots = roots or GCRoots()
        start = {**roots.documents, **self.list_refs()}
        marked = reachable(self, start)
        marked.update(roots.blobs)
        lost = {d: why for d, why in roots.image_ids.items() if d not in marked}
        if lost:
            # Images in use that no ref reaches: find their manifests among the rest.
            unmarked = (info for info in self.iter_blobs() if info.digest not in marked)
            found = manifests_naming(self, unmarked, lost)
            marked.update(reachable(self, found))
            marked.update(lost)  # a config whose manifest is gone still stays
        victims: list[BlobInfo] = []
        kept = 0
        for info in self.iter_blobs():
            if info.digest in marked or (only is not None and info.digest not in only):
                kept += 1
            else:
                victims.append(info)
        temps = () if only is not None else tuple(self._dead_temps())
        return GCPlan(tuple(victims), temps, kept)

    def apply_gc(self, plan: GCPlan) -> GCResult:
        """Remove what ``plan`` lists; counts only what was there to remove."""
        self._check_gc_lock("apply_gc")
        removed = removed_bytes = 0
        swept: set[str] = set()
        for info in plan.blobs:
            path = self._path(info.digest)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed += 1
            removed_bytes += info.size
            swept.add(os.path.dirname(path))
        for directory in sorted(swept):
            fsync_dir(directory)
        temps = sum(self._remove_dead_temp(path) for path in plan.temp_files)
        return GCResult(removed, removed_bytes, plan.kept_blobs, removed_temp_files=temps)

    def gc(
        self,
        dry_run: bool = False,
        roots: GCRoots | None = None,
        *,
        timeout: float | None = None,
    ) -> GCResult:
        """Remove blobs neither the refs nor ``roots`` reach, and temp files of dead
        writers: :meth:`plan_gc` then :meth:`apply_gc` under :meth:`gc_lock`
        (``timeout`` as there). A dry run answers the plan."""
        with self.gc_lock(timeout):
            plan = self.plan_gc(roots)
            return plan.result() if dry_run else self.apply_gc(plan)

    def _dead_temps(self) -> Iterator[str]:
        """Temp files in the ingest area that no live writer holds (flock free)."""
        for entry in sorted(os.scandir(self._ingest_dir), key=lambda e: e.name):
            if not entry.name.endswith(TEMP_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            if self._temp_is_dead(entry.path, remove=False):
                yield entry.path

    def _remove_dead_temp(self, path: str) -> int:
        return int(self._temp_is_dead(path, remove=True))

    @staticmethod
    def _temp_is_dead(path: str, *, remove: bool) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live writer holds it
            if remove:
                # Unlink while we hold the flock: a writer's open-then-flock retries
                # when it finds its file unlinked (LocalBlobWriter._create_temp).
                _unlink_quietly(path)
            return True
        finally:
            os.close(fd)

    def _iter_algorithm(self, algorithm: str) -> Iterator[BlobInfo]:
        directory = os.path.join(self._blobs_dir, algorithm)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return
        for name in names:
            try:
                digest = Digest(algorithm, name)
            except InvalidArgument:
                continue  # not ours: never touch it
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield BlobInfo(digest, st.st_size)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for algorithm in ALGORITHMS:
            yield from self._iter_algorithm(algorithm)

    def delete_blob(self, digest: Digest) -> None:
        """Remove one blob, reachable or not; NotFound if absent."""
        try:
            os.unlink(self._path(digest))
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None


@contextmanager
def _leased(lease: SharedLease, timeout: float | None) -> Iterator[None]:
    lease.acquire(timeout)
    try:
        yield
    finally:
        lease.release()


def _pump(stream: BinaryIO, write: Callable[[memoryview], object], size: int | None) -> None:
    """Copy ``stream`` to ``write`` in 1 MiB chunks; never read past ``size + 1`` bytes."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    readinto = getattr(stream, "readinto", None)
    total = 0
    while True:
        want = CHUNK if size is None else min(CHUNK, size + 1 - total)
        if want <= 0:
            break
        if readinto is not None:
            n = readinto(view[:want])
            chunk = view[: n or 0]
        else:
            chunk = memoryview(stream.read(want) or b"")
        if not chunk:
            break
        total += len(chunk)
        if size is not None and total > size:
            raise SizeMismatch(f"stream is longer than the expected {size} bytes")
        write(chunk)


def _check(got: Digest, got_size: int, expected: Digest, size: int) -> None:
    if got_size != size:
        raise SizeMismatch(f"blob is {got_size} bytes, expected {size}")
    if got != expected:
        raise DigestMismatch(f"blob has digest {got}, expected {expected}")
