"""Apply an OCI layer (an uncompressed tar stream) onto a directory, securely.

Two targets (image-spec layer.md, "Applying Changesets" and "Whiteouts"):

- ``mode="tree"``: ``target`` holds the layers below (or nothing); whiteouts delete
  from it, entries add or replace. Whiteout entries are never materialised.
- ``mode="overlay"``: ``target`` is an empty overlay upper dir, to be stacked on the
  layers below as a lower dir. ``.wh.x`` becomes the overlayfs whiteout (a char device
  0/0 named ``x``), ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its directory
  (``user.overlay.opaque`` when not privileged, for ``userxattr`` mounts); nothing is
  deleted, since there is nothing below. A hardlink must point into this same layer.
  Implicit parents (a path whose directory has no entry in the layer) are made 0755
  root-owned and shadow the lower directory's metadata: lamina's differ always writes
  the parents of what it writes, so only hand-made layers are affected.

Security (ARCHITECTURE.md §5, research §4.3): names arrive clean from
:func:`~lamina.layers.tar.stream.read_entries` (no ``..``, no absolute paths, the root
never replaced); parents are resolved inside the root by :class:`~lamina.layers.fsops.Root`
(a symlink from the image is followed chroot-style, never to the host); an existing leaf
is removed before anything is made there unless both are directories, so nothing is
ever written, chmod-ed or chown-ed through a symlink (CVE-2021-32760); files are created
``O_CREAT|O_EXCL|O_NOFOLLOW``; hardlink targets are resolved in the root and must be
existing non-directories; device nodes need ``privileged`` and ``Limits.allow_devices``;
xattrs from the image are limited to ``user.*`` (not ``user.overlay.*``) and, when
privileged, ``security.capability``; ``trusted.*``, ``security.selinux`` and the rest are
skipped and counted.

Failure: a lamina error is raised and the target is left in an undefined, partial state
(callers apply into a fresh temporary directory and rename it into place on success).
Nothing outside the target is ever touched, on success or failure.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Literal

from lamina.errors import InvalidFormat, LaminaError, NotFound, Unsafe
from lamina.layers import fsops
from lamina.layers.api import (
    CHUNK,
    DEFAULT_LIMITS,
    OPAQUE_WHITEOUT,
    OVERLAY_OPAQUE_XATTR,
    USER_OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    Entry,
    EntryType,
    LayerStats,
    Limits,
    Readable,
)
from lamina.layers.tar.stream import EntryReader, read_entries

HOLE_BLOCK = 4096  # runs of zero blocks this big (aligned) become holes
_ZERO_BLOCK = bytes(HOLE_BLOCK)
_AUFS_META_PREFIX = WHITEOUT_PREFIX + WHITEOUT_PREFIX  # .wh..wh.plnk, .wh..wh.aufs: ignored
_MAX_WARNINGS = 20
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Mode = Literal["tree", "overlay"]
Whiteouts = Literal["apply", "refuse"]


@dataclass(frozen=True, slots=True)
class ApplyStats(LayerStats):
    """:class:`LayerStats` plus what was skipped on purpose (devices, forbidden xattrs)."""

    skipped: int = 0
    warnings: tuple[str, ...] = ()  # the first few skip reasons, one line each


def apply_layer(
    stream: BinaryIO | Readable,
    target: str | os.PathLike[str],
    *,
    mode: Mode = "tree",
    limits: Limits = DEFAULT_LIMITS,
    privileged: bool | None = None,
    same_owner: bool | None = None,
    use_openat2: bool | None = None,
    whiteouts: Whiteouts = "apply",
    owner: tuple[int, int] | None = None,
) -> ApplyStats:
    """Apply the uncompressed layer tar ``stream`` onto the existing directory ``target``.

    ``privileged`` (default: running as root) allows device nodes (with
    ``limits.allow_devices``) and ``security.capability``; ``same_owner`` (default:
    ``privileged``, or True when ``owner`` is given) applies the uid/gid of each entry,
    else files belong to the caller. ``use_openat2`` forces (True) or disables (False)
    the openat2 fast path, for tests.

    ``whiteouts="refuse"`` is for tars that are not layers (``ADD`` archives): a member
    named ``.wh.*`` raises Unsafe instead of deleting anything (written as a plain file
    it would become a whiteout once the tree is diffed into a layer). ``owner`` gives
    every entry these (uid, gid) instead of the tar's (``ADD --chown``).
    """
    if mode not in ("tree", "overlay"):
        raise InvalidFormat(f"unknown apply mode {mode!r}", hint="use 'tree' or 'overlay'")
    if whiteouts not in ("apply", "refuse"):
        raise InvalidFormat(f"unknown whiteouts {whiteouts!r}", hint="use 'apply' or 'refuse'")
    priv = os.geteuid() == 0 if privileged is None else privileged
    keep = (priv or owner is not None) if same_owner is None else same_owner
    with fsops.Root(target, use_openat2=use_openat2) as root:
        applier = _Applier(root, mode, limits, priv, keep, whiteouts=whiteouts, owner=owner)
        for entry, reader in read_entries(stream, limits):
            applier.apply(entry, reader)
        applier.finish()
        return applier.stats()


class _Applier:
    def __init__(
        self,
        root: fsops.Root,
        mode: Mode,
        limits: Limits,
        privileged: bool,
        same_owner: bool,
        *,
        whiteouts: Whiteouts = "apply",
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.root = root
        self.refuse_whiteouts = whiteouts == "refuse"
        self.owner = owner
        self.overlay = mode == "overlay"
        self.limits = limits
        self.privileged = privileged
        self.same_owner = same_owner
        # Paths this layer made (whiteouts never remove them: image-spec layer.md), and
        # the ancestors of those paths (an opaque dir keeps them while clearing the rest).
        self.created: set[str] = set()
        self.touched: set[str] = set()
        # Directory modes and times are applied at the end, deepest first: a read-only
        # directory must still take its children, and writing children changes mtimes.
        self.pending_dirs: dict[str, Entry] = {}
        # Overlay mode: paths this layer whited out (char 0/0 devices it made). If the
        # same layer then adds something at or below such a path, the device becomes an
        # opaque directory: the whiteout still hides the lower layers, the new content
        # shows (image-spec layer.md: whiteouts never hide their own layer's paths).
        self.overlay_whiteouts: set[str] = set()
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.entries = self.files = self.bytes = self.whiteouts = self.skipped = 0
        self.warnings: list[str] = []

    def stats(self) -> ApplyStats:
        return ApplyStats(
            entries=self.entries,
            files=self.files,
            bytes=self.bytes,
            whiteouts=self.whiteouts,
            skipped=self.skipped,
            warnings=tuple(self.warnings),
        )

    def _skip(self, why: str) -> None:
        self.skipped += 1
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(why)

    # ------------------------------------------------------------------ dispatch

    def apply(self, entry: Entry, reader: EntryReader) -> None:
        self.entries += 1
        if self.refuse_whiteouts and entry.basename.startswith(WHITEOUT_PREFIX):
            raise Unsafe(
                f"member {entry.name!r} would become a whiteout in the image layer",
                hint="remove .wh.* files from the archive",
            )
        if self.owner is not None:
            entry = dataclasses.replace(entry, uid=self.owner[0], gid=self.owner[1])
        name = entry.name
        try:
            if self.overlay_whiteouts:
                if entry.is_whiteout:
                    if self._under_own_whiteout(name):
                        self.whiteouts += 1
                        return  # already hidden by this layer's whiteout of an ancestor
                else:
                    self._revive_ancestors(name, entry.type is EntryType.DIR)
            if entry.basename.startswith(WHITEOUT_PREFIX):
                self.whiteouts += 1
                self._whiteout(entry)
                return
            kind = entry.type
            if kind is EntryType.FILE:
                self._file(entry, reader)
            elif kind is EntryType.DIR:
                self._dir(entry)
            elif kind is EntryType.SYMLINK:
                self._symlink(entry)
            elif kind is EntryType.HARDLINK:
                self._hardlink(entry)
            elif kind is EntryType.FIFO:
                self._node(entry, stat.S_IFIFO, 0)
            else:  # CHAR, BLOCK
                if not (self.privileged and self.limits.allow_devices):
                    self._skip(f"device node {name!r} skipped (needs root and allow_devices)")
                    return
                ifmt = stat.S_IFCHR if kind is EntryType.CHAR else stat.S_IFBLK
                self._node(entry, ifmt, os.makedev(entry.devmajor, entry.devminor))
                return
        except OSError as exc:
            raise fsops.os_error(f"apply {entry.type.name.lower()}", name, exc) from exc
        self._mark_created(name)

    def _mark_created(self, name: str) -> None:
        self.created.add(name)
        touched = self.touched
        head = name.rpartition("/")[0]
        while head and head not in touched:
            touched.add(head)
            head = head.rpartition("/")[0]

    def _make(self, name: str, make: Callable[[int, str], None]) -> int:
        """Run ``make(dirfd, leaf)``; if the leaf exists, remove it first (never write
        through it). Returns the borrowed parent fd."""
        dirfd, leaf = self.root.parent(name)
        try:
            make(dirfd, leaf)
        except FileExistsError:
            self._remove(dirfd, leaf, name)
            make(dirfd, leaf)
        return dirfd

    def _remove(self, dirfd: int, leaf: str, name: str) -> None:
        fsops.remove_at(dirfd, leaf)
        self.root.invalidate(name)
        if name in self.touched or name in self.pending_dirs:
            prefix = name + "/"
            for key in [k for k in self.pending_dirs if k == name or k.startswith(prefix)]:
                del self.pending_dirs[key]

    # ------------------------------------------------------------------ entry kinds

    def _file(self, entry: Entry, reader: EntryReader) -> None:
        fds: list[int] = []

        def make(dirfd: int, leaf: str) -> None:
            fds.append(os.open(leaf, _O_NEW_FILE, 0o600, dir_fd=dirfd))

        self._make(entry.name, make)
        fd = fds[0]
        try:
            self._write_content(fd, reader, entry)
            if self.same_owner:
                os.fchown(fd, entry.uid, entry.gid)  # before the mode: chown clears setuid
            os.fchmod(fd, entry.mode)
            for key, value in self._allowed_xattrs(entry):
                try:
                    os.setxattr(fd, key, value)
                except OSError as exc:
                    self._xattr_failed(entry.name, key, exc)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        self.files += 1
        self.bytes += entry.size

    def _write_content(self, fd: int, reader: EntryReader, entry: Entry) -> None:
        """Write ``entry.size`` bytes, leaving aligned runs of zero blocks as holes."""
        size = entry.size
        buf, view = self.buf, self.view
        off = 0
        data_end = 0  # end of the last byte range written
        while off < size:
            n = min(CHUNK, size - off)
            if reader.readinto(view[:n]) != n:
                raise InvalidFormat(f"tar entry {entry.name!r} ends early")
            if n < HOLE_BLOCK or buf.find(_ZERO_BLOCK, 0, n) < 0:
                _pwrite_all(fd, view[:n], off)
                data_end = off + n
            else:
                run = -1  # start of the current run of data blocks
                pos = 0
                while pos < n:
                    end = min(pos + HOLE_BLOCK, n)
                    if end - pos == HOLE_BLOCK and buf.startswith(_ZERO_BLOCK, pos):
                        if run >= 0:
                            _pwrite_all(fd, view[run:pos], off + run)
                            data_end = off + pos
                            run = -1
                    elif run < 0:
                        run = pos
                    pos = end
                if run >= 0:
                    _pwrite_all(fd, view[run:n], off + run)
                    data_end = off + n
            off += n
        if data_end < size:
            os.ftruncate(fd, size)  # the trailing hole

    def _dir(self, entry: Entry) -> None:
        name = entry.name
        dirfd, leaf = self.root.parent(name)
        try:
            os.mkdir(leaf, 0o700, dir_fd=dirfd)
        except FileExistsError:
            st = fsops.lstat_at(dirfd, leaf)
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._remove(dirfd, leaf, name)
                os.mkdir(leaf, 0o700, dir_fd=dirfd)
            else:  # a directory over a directory merges; its metadata is replaced below
                self._drop_stale_xattrs(dirfd, leaf, entry)
        if self.same_owner:
            os.chown(leaf, entry.uid, entry.gid, dir_fd=dirfd, follow_symlinks=False)
        self._set_xattrs_at(dirfd, leaf, entry)
        self.pending_dirs[name] = entry

    def _symlink(self, entry: Entry) -> None:
        # The target is stored as-is: it is only dangerous when followed, and nothing
        # here follows a link that came from an image.
        dirfd = self._make(entry.name, lambda d, leaf: os.symlink(entry.linkname, leaf, dir_fd=d))
        leaf = entry.basename
        if self.same_owner:
            os.chown(leaf, entry.uid, entry.gid, dir_fd=dirfd, follow_symlinks=False)
        self._set_xattrs_at(dirfd, leaf, entry)
        fsops.set_times_at(dirfd, leaf, entry.mtime_ns)

    def _hardlink(self, entry: Entry) -> None:
        name, target = entry.name, entry.linkname
        try:
            tfd, tleaf = fsops.open_parent(self.root, target, create_dirs=False)
        except (NotFound, InvalidFormat) as exc:
            raise self._missing_link(entry) from exc
        try:
            st = fsops.lstat_at(tfd, tleaf)
            if st is None:
                raise self._missing_link(entry)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidFormat(f"hardlink {name!r} points at the directory {target!r}")
            if target == name:
                return  # a link to itself: the file is already there
            self._make(
                name,
                lambda d, leaf: os.link(
                    tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=d, follow_symlinks=False
                ),
            )
        finally:
            os.close(tfd)

    def _missing_link(self, entry: Entry) -> LaminaError:
        hint = "the layer is corrupt: a hardlink must follow its target"
        if self.overlay:
            hint = "in overlay mode a hardlink must point into the same layer; apply in tree mode"
        return InvalidFormat(
            f"hardlink {entry.name!r} points at {entry.linkname!r}, which does not exist",
            hint=hint,
        )

    def _node(self, entry: Entry, ifmt: int, device: int) -> None:
        dirfd = self._make(
            entry.name, lambda d, leaf: os.mknod(leaf, ifmt | 0o600, device, dir_fd=d)
        )
        leaf = entry.basename
        owner = (entry.uid, entry.gid) if self.same_owner else (None, None)
        fsops.set_owner_mode_at(dirfd, leaf, owner[0], owner[1], entry.mode)
        self._set_xattrs_at(dirfd, leaf, entry)
        fsops.set_times_at(dirfd, leaf, entry.mtime_ns)

    # ------------------------------------------------------------------ xattrs

    def _allowed_xattrs(self, entry: Entry) -> list[tuple[str, bytes]]:
        if not entry.xattrs:
            return []
        allowed = []
        for key, value in sorted(entry.xattrs.items()):
            if _image_user_xattr(key) or (key == "security.capability" and self.privileged):
                allowed.append((key, value))
            else:
                self._skip(f"xattr {key!r} of {entry.name!r} skipped (not allowed from images)")
        return allowed

    def _drop_stale_xattrs(self, dirfd: int, leaf: str, entry: Entry) -> None:
        """The xattrs an image may set, on a directory being merged, are the entry's."""
        for key in fsops.read_xattrs_at(dirfd, leaf):
            managed = _image_user_xattr(key) or key == "security.capability"
            if managed and key not in entry.xattrs:
                os.removexattr(fsops.proc_path(dirfd, leaf), key, follow_symlinks=False)

    def _set_xattrs_at(self, dirfd: int, leaf: str, entry: Entry) -> None:
        for key, value in self._allowed_xattrs(entry):
            try:
                fsops.set_xattr_at(dirfd, leaf, key, value)
            except OSError as exc:
                self._xattr_failed(entry.name, key, exc)

    def _xattr_failed(self, name: str, key: str, exc: OSError) -> None:
        # user.* is refused on symlinks and devices (EPERM), some filesystems have none
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
            self._skip(f"xattr {key!r} of {name!r} not set: {exc.strerror}")
        else:
            raise exc

    # ------------------------------------------------------------------ whiteouts

    def _whiteout(self, entry: Entry) -> None:
        parent, _, base = entry.name.rpartition("/")
        if base == OPAQUE_WHITEOUT:
            self._opaque(parent)
            return
        if base.startswith(_AUFS_META_PREFIX):
            self._skip(f"AUFS metadata entry {entry.name!r} ignored")
            return
        victim = base[len(WHITEOUT_PREFIX) :]
        if victim in ("", ".", ".."):
            # image-spec layer.md: a whiteout names one path in its own directory
            raise Unsafe(
                f"whiteout {entry.name!r} does not name a file",
                hint="the layer is hostile or corrupt; do not use this image",
            )
        path = f"{parent}/{victim}" if parent else victim
        if path in self.created:
            return  # whiteouts hide lower layers only, never this layer's own paths
        if self.overlay:
            self._make(
                path,
                lambda d, leaf: os.mknod(leaf, stat.S_IFCHR, os.makedev(0, 0), dir_fd=d),
            )
            self.overlay_whiteouts.add(path)
            return
        try:
            dirfd, leaf = self.root.parent(path, create=False)
        except (NotFound, InvalidFormat):
            return  # nothing below to hide
        if path in self.touched:
            self._remove_lower(dirfd, leaf, path)
        else:
            self._remove(dirfd, leaf, path)

    def _under_own_whiteout(self, name: str) -> bool:
        head = name.rpartition("/")[0]
        while head:
            if head in self.overlay_whiteouts:
                return True
            head = head.rpartition("/")[0]
        return False

    def _revive_ancestors(self, name: str, is_dir: bool) -> None:
        """Turn this layer's whiteout devices at ``name``'s ancestors (and at ``name`` for
        a directory entry) into opaque directories; any other entry replacing a whiteout
        just drops it from the set."""
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self.overlay_whiteouts:
                continue
            self.overlay_whiteouts.discard(path)
            if i == len(parts) and not is_dir:
                return  # a file or link replaces the whiteout device: _make does it
            dirfd, leaf = self.root.parent(path)
            self._remove(dirfd, leaf, path)
            os.mkdir(leaf, 0o755, dir_fd=dirfd)
            self._opaque(path)

    def _opaque(self, path: str) -> None:
        dirfd = self.root.dir_fd(path)
        if self.overlay:
            key = OVERLAY_OPAQUE_XATTR if self.privileged else USER_OVERLAY_OPAQUE_XATTR
            os.setxattr(f"/proc/self/fd/{dirfd}", key, b"y")
        else:
            fd = os.open(".", fsops.O_DIR_READ, dir_fd=dirfd)
            try:
                self._clear_lower(fd, path)
            finally:
                os.close(fd)
            self.root.invalidate(path, below_only=True)
        if path:
            self._mark_created(path)

    def _remove_lower(self, dirfd: int, leaf: str, path: str) -> None:
        """Remove ``path`` except what this layer made in it (order-independent)."""
        st = fsops.lstat_at(dirfd, leaf)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            if path not in self.created:
                self._remove(dirfd, leaf, path)
            return
        fd = os.open(leaf, fsops.O_DIR_READ, dir_fd=dirfd)
        try:
            self._clear_lower(fd, path)
        finally:
            os.close(fd)

    def _clear_lower(self, fd: int, path: str) -> None:
        created, touched = self.created, self.touched
        prefix = f"{path}/" if path else ""
        if not (path in touched if path else created):
            fsops.clear_dir(fd)  # common case: the opaque marker came before the children
            return
        with os.scandir(fd) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in children:
            cpath = prefix + child
            if cpath in touched or (is_dir and cpath in created):
                self._remove_lower(fd, child, cpath)
            elif cpath not in created:
                self._remove(fd, child, cpath)

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """Directory modes and times, children before parents."""
        for name in sorted(self.pending_dirs, reverse=True):
            entry = self.pending_dirs[name]
            try:
                dirfd, leaf = self.root.parent(name, create=False)
            except (NotFound, InvalidFormat):
                continue  # removed later in the layer
            st = fsops.lstat_at(dirfd, leaf)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            try:
                os.chmod(leaf, entry.mode, dir_fd=dirfd, follow_symlinks=False)
                fsops.set_times_at(dirfd, leaf, entry.mtime_ns)
            except OSError as exc:
                raise fsops.os_error("set metadata of directory", name, exc) from exc


def _image_user_xattr(key: str) -> bool:
    # research §4.3 step 9; user.overlay.* would steer a userxattr overlay mount
    return key.startswith("user.") and not key.startswith("user.overlay.")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n
