"""COPY and ADD: put selected sources into an image rootfs, the way Docker does.

Semantics (Dockerfile reference, COPY and ADD; checked against ``buildah build`` here):

- ``dest`` relative to WORKDIR; a trailing ``/`` (or an existing directory, symlinks
  resolved inside the root, so Debian's ``/bin -> usr/bin`` works) makes it a
  directory. Several sources (or a wildcard matching several) need a trailing ``/``.
- A directory source copies its *contents*; the destination directory itself is created
  0755 when missing and keeps its metadata when it exists.
- Missing parent directories are created 0755, owned by the ``--chown`` ids when given
  (buildah and BuildKit do so), else by root.
- Files, directories and symlinks are copied as such, with the source's permission bits
  (``--chmod`` changes files and directories, ``X`` meaning directories and already
  executable files) and mtimes; owners are 0:0 unless ``--chown`` (never the context
  file's owner). A directory that exists in the image takes the copied one's metadata,
  as ``tar -x`` does. Hardlinks within a context selection become separate files; xattrs
  are not copied.
- ``COPY --from`` (``preserve_owner``, ``hardlinks``): without ``--chown`` the files keep
  the owners they have in the source stage or image, and files hardlinked to each other
  there stay hardlinked within one COPY (BuildKit's copier: no chown option for such a
  source, and its inode map links a file met twice). Parents it makes are still 0:0.
- ``--chown`` on a setuid/setgid file keeps the bit: BuildKit's copier chowns, then
  chmods with the source's mode (so the kernel's clearing of S_ISUID/S_ISGID on chown is
  undone). buildah chmods first and loses the bit; lamina follows BuildKit.
- Names starting with ``.wh.`` are refused: they would become whiteouts in the layer.

Security (ARCHITECTURE.md §5): ``dest_root`` may be an image's merged overlay with
hostile symlinks. Every destination parent is resolved inside ``dest_root`` by
:class:`lamina.layers.fsops.Root` (openat2 ``RESOLVE_IN_ROOT`` or the fd walk), the leaf
is never followed (an existing symlink there is replaced, files are made ``O_EXCL |
O_NOFOLLOW``), and ``/etc/passwd`` and ``/etc/group`` for ``--chown`` are read inside the
root with a size cap. Sources are read through fds that cross no symlink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.atomic import write_all
from lamina.builder.files.addurl import fetch_url, url_checksum
from lamina.builder.files.archive import archive_kind, extract
from lamina.builder.files.chmod import ChmodSpec, parse_chmod
from lamina.builder.files.context import (
    DIR,
    FILE,
    SYMLINK,
    Source,
    check_unchanged,
    open_source,
)
from lamina.errors import InvalidArgument, InvalidFormat, NotFound, Unsafe, Unsupported
from lamina.layers import fsops
from lamina.layers.api import WHITEOUT_PREFIX
from lamina.runtime.bundle import users

__all__ = [
    "CopyOptions",
    "Writer",
    "add_into",
    "copy_into",
    "fetch_url",
    "resolve_chown",
    "url_checksum",
]

CHUNK = 1 << 20
SMALL_FILE = 256 << 10  # below this a read and a write beat copy_file_range
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How COPY/ADD writes: ``dest`` as written (after variable expansion)."""

    dest: str
    workdir: str = "/"
    chown: str | None = None
    chmod: str | None = None
    parents: bool = False
    excludes: tuple[str, ...] = ()
    instruction: str = "COPY"
    # COPY --from: keep the source's owners when there is no --chown, and hardlinks
    preserve_owner: bool = False
    hardlinks: bool = False

    def __post_init__(self) -> None:
        if not self.dest or "\0" in self.dest:
            raise InvalidArgument(f"{self.instruction}: invalid destination {self.dest!r}")


# ---------------------------------------------------------------------- --chown


def resolve_chown(dest_root: str, spec: str) -> tuple[int, int]:
    """``user[:group]`` -> (uid, gid), names looked up in the destination's own
    ``/etc/passwd`` and ``/etc/group``. A user without a group: a name takes its passwd
    group, a number the same number (BuildKit's rule)."""
    if "\0" in spec or spec.count(":") > 1 or not spec or spec.startswith(":"):
        raise InvalidArgument(f"invalid --chown {spec!r}", hint="use --chown=user[:group]")
    user_part, has_group, group_part = spec.partition(":")
    if has_group and not group_part:
        raise InvalidArgument(f"invalid --chown {spec!r}: empty group")
    with fsops.Root(dest_root) as root:
        passwd = _read_db(root, "etc/passwd") if not _numeric(user_part) else None
        group = _read_db(root, "etc/group") if has_group and not _numeric(group_part) else None
    if _numeric(user_part):
        uid = _id(user_part)
        gid = uid
    else:
        entry = next((u for u in users.parse_passwd(passwd or "") if u.name == user_part), None)
        if entry is None:
            raise NotFound(
                f"--chown: unable to find user {user_part!r} in the image's /etc/passwd",
                hint="use numeric ids (--chown=1000:1000) or add the user in an earlier RUN",
            )
        uid, gid = entry.uid, entry.gid
    if has_group:
        if _numeric(group_part):
            gid = _id(group_part)
        else:
            match = next((g for g in users.parse_group(group or "") if g.name == group_part), None)
            if match is None:
                raise NotFound(
                    f"--chown: unable to find group {group_part!r} in the image's /etc/group",
                    hint="use a numeric gid (--chown=user:1000) or add the group first",
                )
            gid = match.gid
    return uid, gid


def _numeric(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _id(text: str) -> int:
    value = int(text)
    if value > users.MAX_ID:
        raise InvalidArgument(f"--chown: id {text} is out of range (0..{users.MAX_ID})")
    return value


def _read_db(root: fsops.Root, path: str) -> str | None:
    try:
        data = fsops.safe_read_file(root, path, users.MAX_DB_BYTES)
    except (NotFound, InvalidFormat):
        return None
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------------- the writer


class Writer:
    """Writes into one destination rootfs; shared by COPY, ADD and ADD's extraction."""

    def __init__(self, root: fsops.Root, options: CopyOptions, dest_root: str) -> None:
        self.root = root
        self.options = options
        self.owner = resolve_chown(dest_root, options.chown) if options.chown else None
        self.chmod: ChmodSpec | None = parse_chmod(options.chmod) if options.chmod else None
        dest = options.dest
        full = dest if dest.startswith("/") else posixpath.join(options.workdir or "/", dest)
        self.dir_hint = dest.endswith(("/", "/.")) or dest in (".", "..")
        self.dest = posixpath.normpath("/" + full).lstrip("/")  # "" is the root
        self.pending: list[tuple[str, int, int]] = []  # (path, mode, mtime_ns) of dirs
        self.bytes = 0
        # hardlinks: source (dev, ino) -> (first destination path, its (dev, ino))
        self.links: dict[tuple[int, int], tuple[str, tuple[int, int]]] = {}

    # ------------------------------------------------------------------ directories

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory in the root (symlinks resolved inside it)."""
        if not path:
            return True
        try:
            self.root.dir_fd(path, create=False)
        except (NotFound, InvalidFormat):
            return False
        return True

    def mkdir_p(self, path: str) -> None:
        """Make ``path`` and its missing parents: 0755, owned by --chown's ids or root."""
        parts = fsops.split(path)
        for i in range(len(parts)):
            sub = "/".join(parts[: i + 1])
            try:
                self.root.dir_fd(sub, create=False)
                continue
            except NotFound:
                pass
            dirfd, leaf = self.root.parent(sub, create=False)
            try:
                os.mkdir(leaf, 0o755, dir_fd=dirfd)
            except FileExistsError:
                # a dangling symlink (made by the image): follow it inside the root
                self.root.dir_fd(sub, create=True)
                continue
            except OSError as exc:
                raise fsops.os_error("create directory", sub, exc) from exc
            uid, gid = self.owner or (0, 0)
            fsops.set_owner_mode_at(dirfd, leaf, uid, gid, 0o755)

    # ------------------------------------------------------------------ one object

    def _mode(self, src: Source) -> int:
        if self.chmod is None or src.kind == SYMLINK:
            return src.mode
        return self.chmod.apply(src.mode, src.kind == DIR)

    def _ids(self, src: Source | None = None) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner
        if src is not None and self.options.preserve_owner:
            return src.uid, src.gid
        return 0, 0

    def _clear(self, dirfd: int, leaf: str, path: str, *, keep_dir: bool) -> bool:
        """Remove what is at the leaf unless it is a directory and ``keep_dir``; return
        whether a directory was kept."""
        st = fsops.lstat_at(dirfd, leaf)
        if st is None:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        fsops.remove_at(dirfd, leaf)
        self.root.invalidate(path)
        return False

    def put(self, src_fd: int, src: Source, path: str) -> None:
        """Write the object ``src`` (read from the source root fd) at ``path``."""
        if not path:
            return  # the destination directory itself: made by the caller
        leafname = path.rpartition("/")[2]
        if leafname.startswith(WHITEOUT_PREFIX):
            raise Unsafe(
                f"{self.options.instruction}: {src.relpath!r} would be stored as "
                f"{leafname!r}, which OCI layers read as a whiteout",
                hint="rename the file: names starting with .wh. cannot be in an image",
            )
        try:
            if src.kind == FILE and self._link(src, path):
                return
            dirfd, leaf = self.root.parent(path)
            uid, gid = self._ids(src)
            if src.kind == DIR:
                if not self._clear(dirfd, leaf, path, keep_dir=True):
                    os.mkdir(leaf, 0o700, dir_fd=dirfd)
                os.chown(leaf, uid, gid, dir_fd=dirfd, follow_symlinks=False)
                self.pending.append((path, self._mode(src), src.mtime_ns))
            elif src.kind == SYMLINK:
                self._clear(dirfd, leaf, path, keep_dir=False)
                os.symlink(src.linkname, leaf, dir_fd=dirfd)
                os.chown(leaf, uid, gid, dir_fd=dirfd, follow_symlinks=False)
                fsops.set_times_at(dirfd, leaf, src.mtime_ns)
            elif src.kind == FILE:
                self._file(src_fd, src, dirfd, leaf, path)
            else:
                raise Unsupported(f"{self.options.instruction}: cannot copy {src.relpath!r}")
        except OSError as exc:
            raise fsops.os_error(f"{self.options.instruction} to", "/" + path, exc) from exc

    def _file(self, src_fd: int, src: Source, dirfd: int, leaf: str, path: str) -> None:
        sfd = open_source(src_fd, src)
        try:
            try:
                dfd = os.open(leaf, _O_NEW_FILE, 0o600, dir_fd=dirfd)
            except FileExistsError:
                # never write through what is there (a symlink may point anywhere)
                self._clear(dirfd, leaf, path, keep_dir=False)
                dfd = os.open(leaf, _O_NEW_FILE, 0o600, dir_fd=dirfd)
            try:
                self.bytes += copy_data(sfd, dfd, src.size)
                # A file that shrank or was rewritten while it was copied would land
                # as bytes the cache key never saw: refuse, naming it.
                check_unchanged(sfd, src)
                uid, gid = self._ids(src)
                # Before the mode: chown clears setuid/setgid, and BuildKit keeps them
                # (its copier chowns, then chmods; see the module docstring).
                os.fchown(dfd, uid, gid)
                os.fchmod(dfd, self._mode(src))
                os.utime(dfd, ns=(src.mtime_ns, src.mtime_ns))
                if self.options.hardlinks and src.nlink > 1:
                    st = os.fstat(dfd)
                    self.links.setdefault((src.dev, src.ino), (path, (st.st_dev, st.st_ino)))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _link(self, src: Source, path: str) -> bool:
        """Hardlink ``path`` to the copy of a file already linked to ``src`` in the
        source; False when there is none (or it was replaced since): copy the file."""
        if not self.options.hardlinks or src.nlink < 2:
            return False
        first = self.links.get((src.dev, src.ino))
        if first is None:
            return False
        first_path, ident = first
        if first_path == path:
            return True  # the same file selected twice: it is there
        try:
            tfd, tleaf = fsops.open_parent(self.root, first_path, create_dirs=False)
        except (NotFound, InvalidFormat):
            return False
        try:
            st = fsops.lstat_at(tfd, tleaf)
            if st is None or (st.st_dev, st.st_ino) != ident:
                return False
            dirfd, leaf = self.root.parent(path)
            self._clear(dirfd, leaf, path, keep_dir=False)
            os.link(tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=dirfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        return True

    def finish(self) -> None:
        """Directory modes and times, deepest first (children change a dir's mtime)."""
        for path, mode, mtime in sorted(self.pending, reverse=True):
            try:
                dirfd, leaf = self.root.parent(path, create=False)
                os.chmod(leaf, mode, dir_fd=dirfd, follow_symlinks=False)
                fsops.set_times_at(dirfd, leaf, mtime)
            except (NotFound, InvalidFormat):
                continue  # replaced by a later source
            except OSError as exc:
                raise fsops.os_error("set metadata of", "/" + path, exc) from exc
        self.pending.clear()


def copy_data(sfd: int, dfd: int, size_hint: int = -1) -> int:
    """Copy a whole regular file by fds: small files with one read and write, big ones
    with copy_file_range (the kernel does the work, reflinks where it can), else 1 MiB
    reads and writes."""
    total = 0
    if 0 <= size_hint < SMALL_FILE:
        # a short read of a regular file is its end: two syscalls for the common case
        data = os.read(sfd, SMALL_FILE)
        write_all(dfd, data)
        total = len(data)
        if total < SMALL_FILE:
            return total
    try:
        while True:
            n = os.copy_file_range(sfd, dfd, CHUNK)
            if not n:
                return total
            total += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while True:
        data = os.read(sfd, CHUNK)
        if not data:
            return total
        write_all(dfd, data)
        total += len(data)


# ---------------------------------------------------------------------- COPY


def _plan(w: Writer, sources: Sequence[Source]) -> tuple[bool, str]:
    """(whether the destination is a directory, the path of the destination)."""
    tops = [s for s in sources if s.top]
    opts = w.options
    if len(tops) > 1 and not (w.dir_hint or opts.parents):
        raise InvalidArgument(
            f"When using {opts.instruction} with more than one source file, the destination "
            "must be a directory and end with a /",
            hint=f"write the destination as {opts.dest.rstrip('/')}/",
        )
    if w.dir_hint or opts.parents or w.is_dir(w.dest):
        return True, w.dest
    if len(tops) == 1 and tops[0].kind == DIR:
        return True, w.dest
    return False, w.dest


def copy_into(
    src_root: str, sources: Sequence[Source], dest_root: str, options: CopyOptions
) -> int:
    """Copy what :func:`lamina.builder.files.context.select` chose into ``dest_root``; returns
    the bytes of file content written."""
    with fsops.Root(dest_root) as root:
        w = Writer(root, options, dest_root)
        _copy(w, src_root, sources)
        return w.bytes


def _copy(w: Writer, src_root: str, sources: Sequence[Source]) -> None:
    if not sources:
        return
    as_dir, dest = _plan(w, sources)
    src_fd = os.open(src_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if as_dir:
            w.mkdir_p(dest)
            for src in sources:
                w.put(src_fd, src, f"{dest}/{src.target}" if dest and src.target else src.target)
        else:
            head = dest.rpartition("/")[0]
            if head:
                w.mkdir_p(head)
            for src in sources:
                w.put(src_fd, src, dest)
        w.finish()
    finally:
        os.close(src_fd)


# ---------------------------------------------------------------------- ADD


def add_into(
    src_root: str,
    sources: Sequence[Source],
    dest_root: str,
    options: CopyOptions,
    *,
    unpack: bool | None = None,
) -> int:
    """ADD: like :func:`copy_into`, but a local source file that is a tar archive (plain,
    gzip, zstd, bzip2 or xz, recognised by content) is extracted into the destination
    directory (see :mod:`lamina.builder.files.archive`). ``unpack=False`` copies archives as
    files; None and True extract them (a file that is no archive is copied either way).
    URL sources are downloaded first with :func:`fetch_url` and passed here with
    ``unpack=False`` unless ``--unpack=true``."""
    if options.instruction == "COPY":
        options = dataclasses.replace(options, instruction="ADD")
    with fsops.Root(dest_root) as root:
        w = Writer(root, options, dest_root)
        if not sources:
            return 0
        _plan(w, sources)  # the "several sources need a trailing /" rule counts archives
        archives: list[tuple[Source, int, str]] = []
        rest: list[Source] = []
        src_fd = os.open(src_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for src in sources:
                if unpack is not False and src.top and src.kind == FILE:
                    fd = open_source(src_fd, src)
                    kind = archive_kind(fd)
                    if kind is not None:
                        archives.append((src, fd, kind))
                        continue
                    os.close(fd)
                rest.append(src)
            _copy(w, src_root, rest)
            for src, fd, kind in archives:
                w.mkdir_p(w.dest)
                dest_fd = os.dup(root.dir_fd(w.dest, create=False))
                try:
                    w.bytes += extract(fd, kind, dest_fd, owner=w.owner, name=src.relpath)
                finally:
                    os.close(dest_fd)
                root.invalidate(w.dest, below_only=True)
        finally:
            for _, fd, _ in archives:
                with contextlib.suppress(OSError):
                    os.close(fd)
            os.close(src_fd)
        return w.bytes
