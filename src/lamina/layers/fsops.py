"""Filesystem operations confined to a root directory, through directory fds.

Every path that comes from an image is resolved here, never by the kernel's ordinary
lookup: a layer may plant symlinks (``etc -> /``, ``a -> ../../..``) and a later entry
may then try to write "through" them (research §4.1: CVE-2014-9356, CVE-2021-29136,
CVE-2021-32760). The rules (ARCHITECTURE.md §5, research §4.3):

- Parents are resolved *inside* the root, as if the process were chrooted there: an
  absolute symlink target restarts at the root, ``..`` at the root stays at the root, at
  most :data:`MAX_SYMLINKS` links per lookup. The fast path is one ``openat2`` with
  ``RESOLVE_IN_ROOT`` (Linux 5.6+, called through ``syscall(437)``); the fallback is a
  walk of ``openat(O_PATH|O_NOFOLLOW|O_DIRECTORY)`` one component at a time, which never
  uses the kernel's ``..`` (it pops its own stack of fds), so even a concurrent rename
  cannot lead it out of the root.
- The leaf is never followed: every later operation is ``*at(dirfd, leaf)`` with
  ``follow_symlinks=False``, ``O_NOFOLLOW`` or ``O_EXCL``.
- xattrs are set with ``lsetxattr("/proc/self/fd/<dirfd>/<leaf>")``: Python has no
  ``fsetxattrat``; the magic link is a jump to our own (in-root) directory fd and the
  ``l`` variant does not follow the leaf. Regular files use ``fsetxattr`` on their fd.
- Ownership is set before the mode (``chown`` clears setuid/setgid), and the mode
  before times.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterable
from typing import cast

from lamina.errors import InvalidFormat, LaminaError, LimitExceeded, NotFound, Unsafe

MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2): include/uapi/linux/openat2.h
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437}
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _load_openat2() -> Callable[..., int] | None:
    nr = _SYS_OPENAT2.get(os.uname().machine)
    if nr is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT)
    fd = fn(ctypes.c_long(nr), ctypes.c_int(-100), b"/", ctypes.byref(how), ctypes.c_size_t(24))
    if fd < 0:  # ENOSYS (old kernel) or EPERM (seccomp)
        return None
    os.close(fd)
    _OPENAT2_NR[0] = nr
    return cast(Callable[..., int], fn)


_OPENAT2_NR = [0]
_openat2_fn = _load_openat2()
HAVE_OPENAT2 = _openat2_fn is not None


# How often a lookup that raced a rename or mount is tried again before EAGAIN is final.
_OPENAT2_EAGAIN_TRIES = 16


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """Raw ``openat2``; raises OSError like :func:`os.open`. Only when HAVE_OPENAT2."""
    fn = _openat2_fn
    if fn is None:  # pragma: no cover - guarded by HAVE_OPENAT2
        raise OSError(errno.ENOSYS, "openat2 is not available")
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    for _ in range(_OPENAT2_EAGAIN_TRIES):
        fd = fn(
            ctypes.c_long(_OPENAT2_NR[0]),
            ctypes.c_int(dirfd),
            encoded,
            ctypes.byref(how),
            ctypes.c_size_t(24),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        # openat2(2): with RESOLVE_IN_ROOT or RESOLVE_BENEATH the kernel answers EAGAIN
        # when a rename or mount anywhere on the system raced the lookup; it asks the
        # caller to try again (seen here under load: a rename in another test).
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def proc_path(dirfd: int, leaf: str) -> str:
    """A path naming ``leaf`` in ``dirfd`` for the path-only syscalls (xattrs)."""
    return f"/proc/self/fd/{dirfd}/{leaf}"


def os_error(action: str, path: str, exc: OSError) -> LaminaError:
    """Wrap an OSError from an operation on an image path into a lamina error."""
    if exc.errno == errno.ENOENT:
        return NotFound(f"{action} {path!r}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return Unsafe(f"{action} {path!r}: too many levels of symbolic links")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LaminaError(f"{action} {path!r}: no space left", hint="free some disk space")
    return LaminaError(f"{action} {path!r}: {exc.strerror or exc}")


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class Root:
    """A target directory, held by an ``O_PATH`` fd, in which image paths are resolved.

    :meth:`dir_fd` and :meth:`parent` return *borrowed* fds from a small cache: use them
    before the next call on this Root (which may evict them), and never close them; take
    an owned one with :func:`open_parent` when two are needed at once. Only lookups
    that crossed no symlink are cached, so a cached fd always names the directory the
    path names now, as long as whoever changes the tree calls :meth:`invalidate` when it
    removes or replaces a directory (the applier does).
    """

    __slots__ = ("_cache", "_cache_size", "fd", "path", "use_openat2")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        use_openat2: bool | None = None,
        cache_size: int = 128,
    ) -> None:
        self.path = os.fspath(path)
        try:
            # The target itself is named by the caller, not by an image: following it is fine.
            self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error("open target directory", self.path, exc) from exc
        self.use_openat2 = HAVE_OPENAT2 if use_openat2 is None else use_openat2 and HAVE_OPENAT2
        self._cache: dict[str, int] = {}
        self._cache_size = cache_size

    def close(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the cache

    def invalidate(self, path: str, *, below_only: bool = False) -> None:
        """Forget cached fds of everything below ``path``, and of ``path`` itself unless
        ``below_only``. Call it after removing or replacing anything there."""
        if not self._cache:
            return
        prefix = path + "/" if path else ""
        stale = [
            p
            for p in self._cache
            if p.startswith(prefix) or (p == path and not below_only and path)
        ]
        for p in stale:
            os.close(self._cache.pop(p))

    def _remember(self, path: str, fd: int) -> int:
        cache = self._cache
        if len(cache) >= self._cache_size:
            os.close(cache.pop(next(iter(cache))))
        cache[path] = fd
        return fd

    # ------------------------------------------------------------------ lookups

    def dir_fd(self, path: str, *, create: bool = True, mode: int = 0o755) -> int:
        """A borrowed ``O_PATH`` fd of the directory ``path`` names inside the root.

        Missing directories are made (``mode``) when ``create``, else NotFound. A
        component that is not a directory is InvalidFormat; a symlink loop is Unsafe.
        """
        if not path:
            return self.fd
        fd = self._cache.get(path)
        if fd is not None:
            return fd
        # Fast path: from the nearest cached ancestor, no symlinks allowed on the way.
        base, rest = self.fd, path
        head = path
        while True:
            head = head.rpartition("/")[0]
            if not head:
                break
            cached = self._cache.get(head)
            if cached is not None:
                base, rest = cached, path[len(head) + 1 :]
                break
        try:
            if self.use_openat2:
                fd = openat2(
                    base, rest, os.O_PATH | os.O_DIRECTORY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
                )
            else:
                fd = _plain_walk(base, rest)
        except OSError:
            pass  # a symlink, a missing directory or a non-directory: the slow path decides
        else:
            return self._remember(path, fd)
        fd, crossed_link = self._resolve(path, create=create, mode=mode)
        if crossed_link:
            # Not cached: the link (or its target) may change later in this layer.
            # Park it in the cache under a key no path can have, closed on close().
            return self._remember("\0" + str(fd), fd)
        return self._remember(path, fd)

    def parent(self, path: str, *, create: bool = True, mode: int = 0o755) -> tuple[int, str]:
        """``(borrowed dirfd, leaf)`` for a clean image path."""
        head, _, leaf = path.rpartition("/")
        if leaf in ("", ".", "..") or "\0" in path:
            # read_entries never yields these; a leaf '..' would name the root's parent
            raise Unsafe(f"{path!r} is not a clean path inside the root")
        return self.dir_fd(head, create=create, mode=mode), leaf

    def _resolve(self, path: str, *, create: bool, mode: int) -> tuple[int, bool]:
        """Resolve a directory in the root, following symlinks chroot-style; owned fd."""
        if self.use_openat2:
            try:
                return openat2(self.fd, path, os.O_PATH | os.O_DIRECTORY, RESOLVE_IN_ROOT), True
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise os_error("resolve", path, exc) from exc
                # missing parts (to be made) or a precise error: the walk sorts it out
        return walk_in_root(self.fd, split(path), create=create, mode=mode, follow_last=True)


def _plain_walk(base: int, rest: str) -> int:
    """Open a directory below ``base`` crossing no symlink (OSError otherwise)."""
    fd = base
    try:
        for part in rest.split("/"):
            nfd = os.open(part, _O_PATH_DIR, dir_fd=fd)
            if fd != base:
                os.close(fd)
            fd = nfd
    except OSError:
        if fd != base:
            os.close(fd)
        raise
    return fd if fd != base else os.dup(base)


def walk_in_root(
    root_fd: int,
    parts: list[str],
    *,
    create: bool = False,
    mode: int = 0o755,
    follow_last: bool = True,
    want_dir: bool = True,
) -> tuple[int, bool]:
    """Resolve ``parts`` inside the root fd as if chrooted; ``(owned O_PATH fd, crossed)``.

    The manual fallback of openat2(RESOLVE_IN_ROOT). ``crossed`` says whether a symlink
    was followed. With ``want_dir=False`` the last component may be any type (a symlink
    there is followed only when ``follow_last``).
    """
    stack: list[int] = []  # owned fds of the directories below the root, in order
    todo = list(reversed(parts))
    links = 0
    crossed = False
    try:
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if stack:  # '..' at the root stays at the root
                    os.close(stack.pop())
                continue
            cur = stack[-1] if stack else root_fd
            last = not todo
            flags = _O_PATH_DIR if (want_dir or not last) else os.O_PATH | os.O_NOFOLLOW
            try:
                fd = os.open(part, flags | os.O_CLOEXEC, dir_fd=cur)
            except FileNotFoundError:
                if not create:
                    raise NotFound(f"{'/'.join(parts)!r} does not exist in the root") from None
                with contextlib.suppress(FileExistsError):  # raced: look again
                    os.mkdir(part, mode, dir_fd=cur)
                todo.append(part)
                continue
            except NotADirectoryError:
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise InvalidFormat(
                        f"{'/'.join(parts)!r}: {part!r} is not a directory",
                        hint="the layer puts entries below a file",
                    ) from None
                fd = -1
            if fd >= 0:
                st = os.fstat(fd)
                if not stat.S_ISLNK(st.st_mode):
                    stack.append(fd)
                    continue
                os.close(fd)
                if last and not follow_last:
                    return os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur), (
                        crossed
                    )
            # A symlink: splice its target in front of what is left, chroot-style.
            links += 1
            if links > MAX_SYMLINKS:
                raise Unsafe(f"{'/'.join(parts)!r}: too many levels of symbolic links")
            crossed = True
            target = os.readlink(part, dir_fd=cur)
            if not target:
                raise InvalidFormat(f"{'/'.join(parts)!r}: {part!r} is an empty symlink")
            if target.startswith("/"):
                for fd in stack:
                    os.close(fd)
                stack.clear()
            todo.extend(reversed(target.split("/")))
        if stack:
            return stack.pop(), crossed
        return os.dup(root_fd), crossed
    except OSError as exc:
        raise os_error("resolve", "/".join(parts), exc) from exc
    finally:
        for fd in stack:
            os.close(fd)


def open_parent(
    root: Root, clean_path: str, create_dirs: bool = True, mode: int = 0o755
) -> tuple[int, str]:
    """``(owned dirfd, leaf)`` of a clean image path; the caller closes the fd."""
    fd, leaf = root.parent(clean_path, create=create_dirs, mode=mode)
    return os.dup(fd), leaf


# ---------------------------------------------------------------------- leaves


def remove_at(dirfd: int, name: str) -> None:
    """Remove ``name`` in ``dirfd``: a file, or a whole directory tree, through fds only."""
    if name in ("", ".", "..") or "/" in name:
        raise Unsafe(f"refusing to remove {name!r}: not a name in its directory")
    try:
        os.unlink(name, dir_fd=dirfd)
        return
    except IsADirectoryError:
        pass
    except FileNotFoundError:
        return
    except PermissionError as exc:
        if exc.errno != errno.EISDIR and not _is_dir_at(dirfd, name):
            raise
    _rmtree_at(dirfd, name)


def _is_dir_at(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _rmtree_at(dirfd: int, name: str) -> None:
    fd = os.open(name, O_DIR_READ, dir_fd=dirfd)
    try:
        clear_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dirfd)


def clear_dir(fd: int, keep: Iterable[str] = ()) -> None:
    """Remove every child of the open directory ``fd`` except the names in ``keep``."""
    keep = frozenset(keep)
    with os.scandir(fd) as it:
        children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it if e.name not in keep]
    for name, is_dir in children:
        if is_dir:
            _rmtree_at(fd, name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)


def lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def set_owner_mode_at(
    dirfd: int, name: str, uid: int | None, gid: int | None, mode: int | None
) -> None:
    """lchown, then chmod without following (never called on symlinks for the mode)."""
    if uid is not None and gid is not None:
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
    if mode is not None:
        os.chmod(name, mode, dir_fd=dirfd, follow_symlinks=False)


def set_times_at(dirfd: int, name: str, mtime_ns: int) -> None:
    os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dirfd, follow_symlinks=False)


def set_xattr_at(dirfd: int, name: str, key: str, value: bytes) -> None:
    os.setxattr(proc_path(dirfd, name), key, value, follow_symlinks=False)


def read_xattrs_at(dirfd: int, name: str, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """All xattrs of ``name`` (not followed) except names starting with ``skip``."""
    path = proc_path(dirfd, name)
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for key in keys:
        if key.startswith(skip):
            continue
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed meanwhile
                raise
    return out


def safe_read_file(root: Root, path: str, max_bytes: int) -> bytes:
    """Read a small regular file inside an image root (``/etc/passwd``, ``/etc/group``).

    The whole path, leaf included, is resolved inside the root (a symlinked
    ``/etc/passwd`` is followed chroot-style, never to the host); anything but a regular
    file is refused before it is opened for reading (a FIFO would block, a device could
    act on open), and more than ``max_bytes`` is LimitExceeded (CVE-2024-9676,
    CVE-2026-47262).
    """
    parts = split(path)
    if not parts:
        raise Unsafe(f"{path!r} names the root directory, not a file")
    if root.use_openat2:
        try:
            pfd = openat2(root.fd, "/".join(parts), os.O_PATH, RESOLVE_IN_ROOT)
        except OSError as exc:
            raise os_error("open", path, exc) from exc
    else:
        pfd, _ = walk_in_root(root.fd, parts, create=False, want_dir=False, follow_last=True)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe(
                f"{path!r} in the image is not a regular file",
                hint="the image is hostile or broken (CVE-2024-9676); fix its /etc files",
            )
        if st.st_size > max_bytes:
            raise LimitExceeded(f"{path!r} in the image is over {max_bytes} bytes")
        # Reopen the very inode we checked (a magic link to our own fd), for reading.
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise os_error("open", path, exc) from exc
    finally:
        os.close(pfd)
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            data = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not data:
                break
            chunks.append(data)
            total += len(data)
            if total > max_bytes:
                raise LimitExceeded(f"{path!r} in the image is over {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_beneath(root_fd: int, path: str, flags: int) -> int:
    """Open ``path`` below ``root_fd`` crossing no symlink at all (leaf included).

    For reading trees lamina made or was told to read (a snapshot, a rootfs to import):
    a symlink on the way means the tree changed under us, so it fails (OSError ELOOP or
    ENOTDIR) instead of being followed anywhere.
    """
    if HAVE_OPENAT2:
        return openat2(root_fd, path, flags | os.O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    head, _, leaf = path.rpartition("/")
    dirfd = _plain_walk(root_fd, head) if head else root_fd
    try:
        return os.open(leaf, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    finally:
        if dirfd != root_fd:
            os.close(dirfd)
