"""Tree operations of the snapshotters: copy with all metadata, disk usage, removal.

Everything walks by directory file descriptors and never follows a symlink: the trees
hold image content, and a symlink in an image may point anywhere on the host. Trees
are lamina's own (0700 snapshot dirs), so they do not change while we walk them; the
fd walk still keeps a hostile link from turning a copy into a host write.
"""

from __future__ import annotations

import errno
import os
import stat

from lamina.errors import LaminaError, LimitExceeded, NotFound, Unsupported
from lamina.lightstd import suppress

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 30  # copy_file_range length per call; the kernel copies, Python holds nothing
# Errors of xattr calls that mean "this name cannot live here" rather than an I/O failure.
_XATTR_SKIP = (errno.ENOTSUP, errno.EPERM, errno.EINVAL)


def os_error(exc: OSError, what: str) -> LaminaError:
    """A lamina error for an OSError met while ``what`` (one line, with a hint)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LaminaError(f"{what}: no space left on device", hint="free disk space, then retry")
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}: {exc.strerror}: {exc.filename or ''}".rstrip(": "))
    if exc.errno == errno.EMFILE:
        return LimitExceeded(
            f"{what}: too many open files (tree too deep?)", hint="raise `ulimit -n`"
        )
    if exc.errno in (errno.EPERM, errno.EACCES):
        return Unsupported(f"{what}: {exc.strerror}", hint="snapshots need root")
    return LaminaError(f"{what}: {exc.strerror or exc}")


# --------------------------------------------------------------------------- copy


class _Copier:
    """Copies one tree: contents (sparse-aware), owners, modes, times, xattrs, hardlinks,
    devices, fifos and sockets. Directory metadata is set after the children are in."""

    def __init__(self, dst_root_fd: int) -> None:
        self.dst_root_fd = dst_root_fd
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first copied rel path

    def copy_dir(self, src_fd: int, dst_fd: int, rel: str) -> None:
        with os.scandir(src_fd) as it:
            names = sorted(entry.name for entry in it)
        for name in names:
            st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
            child = f"{rel}/{name}" if rel else name
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(name, 0o700, dir_fd=dst_fd)
                sub_src = os.open(name, _O_DIR, dir_fd=src_fd)
                try:
                    sub_dst = os.open(name, _O_DIR, dir_fd=dst_fd)
                    try:
                        self.copy_dir(sub_src, sub_dst, child)
                        copy_meta(sub_src, sub_dst, st)
                    finally:
                        os.close(sub_dst)
                finally:
                    os.close(sub_src)
                continue
            first = self.links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
            if first is not None:
                os.link(
                    first,
                    name,
                    src_dir_fd=self.dst_root_fd,
                    dst_dir_fd=dst_fd,
                    follow_symlinks=False,
                )
                continue
            if stat.S_ISREG(mode):
                self._copy_file(src_fd, dst_fd, name, st)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
                self._meta_at(src_fd, dst_fd, name, st)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_fd)
                self._meta_at(src_fd, dst_fd, name, st)
            elif stat.S_ISSOCK(mode):
                os.mknod(name, stat.S_IFSOCK | 0o600, 0, dir_fd=dst_fd)
                self._meta_at(src_fd, dst_fd, name, st)
            else:
                raise Unsupported(f"cannot copy {child!r}: unknown file type {mode:o}")
            if st.st_nlink > 1:
                self.links[(st.st_dev, st.st_ino)] = child

    def _copy_file(self, src_fd: int, dst_fd: int, name: str, st: os.stat_result) -> None:
        fin = os.open(name, _O_FILE, dir_fd=src_fd)
        try:
            fout = os.open(name, _O_NEW, 0o600, dir_fd=dst_fd)
            try:
                copy_data(fin, fout, st.st_size)
                copy_meta(fin, fout, st)
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    def _meta_at(self, src_fd: int, dst_fd: int, name: str, st: os.stat_result) -> None:
        """Metadata of a node that cannot be opened (symlink, device, fifo, socket)."""
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_fd, follow_symlinks=False)
        src = f"/proc/self/fd/{src_fd}/{name}"
        dst = f"/proc/self/fd/{dst_fd}/{name}"
        # /proc/self/fd/N is a real directory here, and the leaf is never followed.
        for attr in _listxattr(src):
            with suppress(OSError):
                value = os.getxattr(src, attr, follow_symlinks=False)
                _setxattr(dst, attr, value)
        os.utime(
            name,
            ns=(st.st_atime_ns, st.st_mtime_ns),
            dir_fd=dst_fd,
            follow_symlinks=False,
        )


def _listxattr(path: str | int) -> list[str]:
    try:
        if isinstance(path, int):
            return os.listxattr(path)
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _XATTR_SKIP:
            return []
        raise


def _setxattr(target: str | int, attr: str, value: bytes) -> None:
    try:
        if isinstance(target, int):
            os.setxattr(target, attr, value)
        else:
            os.setxattr(target, attr, value, follow_symlinks=False)
    except OSError as exc:
        # user.* xattrs cannot live on symlinks and devices; trusted.* need root. A copy
        # keeps what the target filesystem can hold, like cp -a does.
        if exc.errno not in _XATTR_SKIP:
            raise


def copy_meta(src_fd: int, dst_fd: int, st: os.stat_result) -> None:
    """Owner, mode (after chown, which clears setuid), xattrs and times, fd to fd."""
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    for attr in _listxattr(src_fd):
        _setxattr(dst_fd, attr, os.getxattr(src_fd, attr))
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_data(fin: int, fout: int, size: int) -> None:
    """Copy ``size`` bytes, keeping holes (SEEK_DATA/SEEK_HOLE) and letting the kernel
    move the bytes (copy_file_range: no userspace buffer, reflinks where supported)."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fin, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        hole = os.lseek(fin, data, os.SEEK_HOLE)
        _copy_range(fin, fout, data, hole)
        pos = hole
    os.ftruncate(fout, size)


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    off = start
    while off < end:
        try:
            n = os.copy_file_range(fin, fout, min(_CHUNK, end - off), off, off)
        except OSError as exc:
            # Filesystems or kernels without copy_file_range: plain reads, 1 MiB at a time.
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = _copy_slow(fin, fout, off, end)
        if n == 0:
            break  # the source shrank under us; ftruncate keeps the size promised
        off += n


def _copy_slow(fin: int, fout: int, start: int, end: int) -> int:
    off = start
    while off < end:
        data = os.pread(fin, min(1 << 20, end - off), off)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fout, view, off + len(data) - len(view)) :]
        off += len(data)
    return off - start


def copy_tree(src: str, dst: str) -> None:
    """Copy the tree under directory ``src`` into the existing empty directory ``dst``,
    including the root directory's own metadata."""
    src_fd = os.open(src, _O_DIR)
    try:
        dst_fd = os.open(dst, _O_DIR)
        try:
            _Copier(dst_fd).copy_dir(src_fd, dst_fd, "")
            copy_meta(src_fd, dst_fd, os.fstat(src_fd))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


# --------------------------------------------------------------------------- usage


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, inodes) of the tree at ``path``, each inode counted once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    root_fd = os.open(path, _O_DIR)
    stack = [root_fd]
    try:
        st = os.fstat(root_fd)
        seen.add((st.st_dev, st.st_ino))
        size += st.st_blocks * 512
        while stack:
            fd = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = list(it)
                for entry in entries:
                    est = entry.stat(follow_symlinks=False)
                    key = (est.st_dev, est.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    size += est.st_blocks * 512
                    if stat.S_ISDIR(est.st_mode):
                        stack.append(os.open(entry.name, _O_DIR, dir_fd=fd))
            finally:
                os.close(fd)
    except BaseException:
        for fd in stack:
            with suppress(OSError):
                os.close(fd)
        raise
    return size, len(seen)


# --------------------------------------------------------------------------- removal


def remove_tree(path: str) -> None:
    """Delete a tree; a missing path is fine. Walks by directory fds (``os.fwalk``,
    bottom up) and never follows a symlink, like ``shutil.rmtree`` on Linux, whose
    import (bz2, lzma, fnmatch...) would cost ``lamina run --rm`` more than the work."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    for _, dirs, files, dir_fd in os.fwalk(path, topdown=False):
        for name in files:
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        for name in dirs:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except NotADirectoryError:  # a symlink to a directory (listed, not entered)
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    with suppress(FileNotFoundError):
        os.rmdir(path)
