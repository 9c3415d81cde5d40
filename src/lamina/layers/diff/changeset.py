"""Turn two trees, or an overlay upper dir, into an OCI layer (image-spec layer.md).

Output order: depth-first, each directory's entries sorted by name bytes (see
:mod:`lamina.layers.diff.tree_reader`); a whiteout ``.wh.x`` sorts under its own name; an opaque
marker ``.wh..wh..opq`` comes right after its directory's entry, before the children
(extractors that act on the marker when they meet it then keep the children).

What counts as a change (:func:`diff_trees`), for a path in both trees with one type:
mode bits, uid, gid, xattrs, symlink target, device numbers, size, or mtime (directories,
devices, fifos); a regular file or symlink whose metadata is equal but whose mtime
differs is compared by content and left out when equal, so a rewrite with the same bytes
does not make a layer bigger (the result then keeps the lower file's mtime). Hardlinks
count too: a path whose link count or set of in-tree names changed is a change.

What is written: every added or changed path in full; ``.wh.<name>`` for each deleted
path (one for a deleted directory, not one per child); every ancestor directory of a
written path, with its metadata from the upper tree (so the parents an extractor makes
are right, and an overlay upper dir made from the layer does not shadow a lower
directory with default metadata); all names of an inode that has one written name, the
first in layer order as the file and the rest as hardlinks to it (so the layer never
links to a file it does not carry). Sockets are skipped. Entries carry uid/gid numbers,
no user or group names; ``clamp_mtime_ns`` (SOURCE_DATE_EPOCH) caps every mtime.

Both functions write into a :class:`~lamina.layers.tar.stream.TarWriter` and do not close
it. The trees must not change meanwhile (Conflict if a file visibly did).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from lamina.errors import Unsupported
from lamina.layers import fsops
from lamina.layers.api import (
    OPAQUE_WHITEOUT,
    OVERLAY_OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIXES,
    USER_OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    Entry,
    EntryType,
    LayerStats,
)
from lamina.layers.diff.tree_reader import Node, TreeReader, same_content, sort_key
from lamina.layers.tar.stream import TarWriter

_UPPER_SKIP_XATTRS = ("security.selinux",)  # overlay xattrs are read, then interpreted
_METACOPY = ("trusted.overlay.metacopy", "user.overlay.metacopy")
_REDIRECT = ("trusted.overlay.redirect", "user.overlay.redirect")
_WHITEOUT = object()
_OPAQUE = object()

Path = str | os.PathLike[str]


@dataclass(slots=True)
class _Record:
    """One entry of a diff walk."""

    key: tuple[bytes, ...]
    node: Node | None  # None for whiteouts
    name: str  # the entry name
    marker: object = None  # _WHITEOUT, _OPAQUE or None


def diff_trees(
    lower: Path | None, upper: Path, writer: TarWriter, *, clamp_mtime_ns: int | None = None
) -> LayerStats:
    """Write the changeset that turns ``lower`` into ``upper`` (None: the full tree)."""
    try:
        return _diff_trees(lower, upper, writer, clamp_mtime_ns)
    except OSError as exc:
        raise fsops.os_error("diff", os.fspath(upper), exc) from exc


def _diff_trees(
    lower: Path | None, upper: Path, writer: TarWriter, clamp: int | None
) -> LayerStats:
    with TreeReader(upper) as up:
        if lower is None:
            differ = _Differ(up, None)
            differ.walk(None, up.fd, "")
        else:
            with TreeReader(lower) as low:
                differ = _Differ(up, low)
                differ.walk(low.fd, up.fd, "")
        differ.settle_links()
        return _write(differ.records(), up, None, writer, clamp)


def diff_overlay_upper(
    upper: Path,
    writer: TarWriter,
    lower_view: Path | None = None,
    *,
    clamp_mtime_ns: int | None = None,
) -> LayerStats:
    """Write an overlayfs upper dir as a layer.

    The upper dir holds exactly what changed: a char device 0/0 is the whiteout of its
    name, a directory with ``trusted.overlay.opaque=y`` (or ``user.overlay.opaque``)
    becomes the directory plus ``.wh..wh..opq``, anything else is written as it is
    (copied-up directories whose metadata did not change are written too: harmless).
    ``lower_view`` is the merged lower layers, needed only for metacopy files (their
    data lives below); a redirected (renamed) directory is Unsupported: mount with
    ``redirect_dir=off`` (lamina's snapshotter does).
    """
    try:
        return _diff_upper(upper, writer, lower_view, clamp_mtime_ns)
    except OSError as exc:
        raise fsops.os_error("diff overlay upper dir", os.fspath(upper), exc) from exc


def _diff_upper(
    upper: Path, writer: TarWriter, lower_view: Path | None, clamp_mtime_ns: int | None
) -> LayerStats:
    with TreeReader(upper, skip_xattrs=_UPPER_SKIP_XATTRS) as up:
        records: list[_Record] = []
        _walk_upper(up, up.fd, "", records)
        records.sort(key=lambda r: r.key)
        if lower_view is None:
            return _write(records, up, None, writer, clamp_mtime_ns)
        with TreeReader(lower_view) as low:
            return _write(records, up, low, writer, clamp_mtime_ns)


def _walk_upper(up: TreeReader, fd: int, rel: str, out: list[_Record]) -> None:
    for node in up.scan(fd, rel):
        _check_name(node.path)
        name = node.path.rpartition("/")[2]
        xattrs = node.xattrs
        if node.kind is EntryType.CHAR and node.st.st_rdev == 0:
            wh = _whiteout_of(node.path)
            out.append(_Record(sort_key(wh), None, wh, _WHITEOUT))
            continue
        overlay = {k: xattrs.pop(k) for k in list(xattrs) if k.startswith(OVERLAY_XATTR_PREFIXES)}
        if any(k in overlay for k in _REDIRECT):
            raise Unsupported(
                f"{node.path!r} in the overlay upper dir is a redirected (renamed) directory",
                hint="mount overlayfs with redirect_dir=off to commit its upper dir",
            )
        if any(k in overlay for k in _METACOPY):
            node.xattrs["\0metacopy"] = b""  # data lives below: see _write
        out.append(_Record(sort_key(node.path), node, node.path))
        if node.kind is EntryType.DIR:
            opaque = overlay.get(OVERLAY_OPAQUE_XATTR, overlay.get(USER_OVERLAY_OPAQUE_XATTR))
            if opaque == b"y":
                marker = f"{node.path}/{OPAQUE_WHITEOUT}"
                # b"" sorts before every child name: right after the directory
                out.append(_Record((*sort_key(node.path), b""), None, marker, _OPAQUE))
            sub = up.open_dir(fd, name)
            try:
                _walk_upper(up, sub, node.path, out)
            finally:
                os.close(sub)


def _whiteout_of(path: str) -> str:
    """The whiteout entry that deletes ``path`` (image-spec layer.md): ``a/b`` -> ``a/.wh.b``."""
    parent, _, name = path.rpartition("/")
    return f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name


def _check_name(path: str) -> None:
    if path.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
        # image-spec layer.md: such a name would read as a whiteout
        raise Unsupported(
            f"{path!r} starts with {WHITEOUT_PREFIX!r} and cannot be stored in an OCI layer",
            hint="rename the file",
        )


class _Differ:
    """Pass 1 of :func:`diff_trees`: what changed, without reading file contents twice."""

    def __init__(self, up: TreeReader, low: TreeReader | None) -> None:
        self.up = up
        self.low = low
        self.emit: dict[str, Node] = {}  # path -> upper node to write
        self.whiteouts: list[str] = []
        self.dirs: dict[str, Node] = {}  # every upper directory (for ancestors)
        self.up_links: dict[tuple[int, int], list[Node]] = {}
        self.low_links: dict[tuple[int, int], list[str]] = {}
        self.low_inode: dict[str, tuple[int, int]] = {}
        self.kept_linked: list[tuple[Node, Node]] = []  # unchanged, but in a link group

    def _seen_upper(self, node: Node) -> None:
        if node.kind is EntryType.DIR:
            self.dirs[node.path] = node
        elif node.st.st_nlink > 1:
            self.up_links.setdefault(node.inode, []).append(node)

    def _seen_lower(self, node: Node) -> None:
        if node.kind is not EntryType.DIR and node.st.st_nlink > 1:
            self.low_links.setdefault(node.inode, []).append(node.path)
            self.low_inode[node.path] = node.inode

    def walk(self, lfd: int | None, ufd: int, rel: str) -> None:
        unodes = self.up.scan(ufd, rel)
        if lfd is None or self.low is None:
            for u in unodes:
                self._add(u, ufd)
            return
        lnodes = {n.path: n for n in self.low.scan(lfd, rel)}
        for u in unodes:
            lo = lnodes.pop(u.path, None)
            if lo is not None:
                self._seen_lower(lo)
            if lo is None or lo.kind is not u.kind:
                self._add(u, ufd)
                continue
            if u.kind is EntryType.DIR:
                self._seen_upper(u)
                if not _same_meta(u, lo):
                    self.emit[u.path] = u
                name = u.path.rpartition("/")[2]
                sub_u = self.up.open_dir(ufd, name)
                try:
                    sub_l = self.low.open_dir(lfd, name)
                    try:
                        self.walk(sub_l, sub_u, u.path)
                    finally:
                        os.close(sub_l)
                finally:
                    os.close(sub_u)
                continue
            _check_name(u.path)
            self._seen_upper(u)
            if not self._same(u, lo):
                self.emit[u.path] = u
            elif u.st.st_nlink > 1 or lo.st.st_nlink > 1:
                self.kept_linked.append((u, lo))
        # Whatever is left in the lower directory is gone: one whiteout each.
        self.whiteouts.extend(lnodes)

    def _add(self, u: Node, ufd: int) -> None:
        """``u`` is new (or replaces another type): write it and all below it."""
        _check_name(u.path)
        self._seen_upper(u)
        self.emit[u.path] = u
        if u.kind is EntryType.DIR:
            name = u.path.rpartition("/")[2]
            sub = self.up.open_dir(ufd, name)
            try:
                self.walk(None, sub, u.path)
            finally:
                os.close(sub)

    def _same(self, u: Node, lo: Node) -> bool:
        if not _same_meta(u, lo):
            if u.kind not in (EntryType.FILE, EntryType.SYMLINK):
                return False
            if u.st.st_mtime_ns == lo.st.st_mtime_ns:
                return False
            if not _same_meta(u, lo, mtime=False):
                return False
            if u.kind is EntryType.SYMLINK:
                return True  # same target (compared in _same_meta)
            assert self.low is not None
            return same_content(self.up, u, self.low, lo)
        return True

    def settle_links(self) -> None:
        """Hardlink groups: a changed membership is a change; a group is all or nothing."""
        low_groups = {ino: frozenset(paths) for ino, paths in self.low_links.items()}
        up_groups = {ino: frozenset(n.path for n in nodes) for ino, nodes in self.up_links.items()}
        for u, lo in self.kept_linked:
            lgroup = low_groups.get(self.low_inode.get(lo.path, (-1, -1)), frozenset((lo.path,)))
            ugroup = up_groups.get(u.inode, frozenset((u.path,)))
            if u.st.st_nlink != lo.st.st_nlink or lgroup != ugroup:
                self.emit[u.path] = u
        for nodes in self.up_links.values():
            if any(n.path in self.emit for n in nodes):
                for n in nodes:
                    self.emit[n.path] = n
        # Every ancestor of a written path is written too (see the module docstring).
        for path in [*self.emit, *self.whiteouts]:
            head = path.rpartition("/")[0]
            while head and head not in self.emit:
                self.emit[head] = self.dirs[head]
                head = head.rpartition("/")[0]

    def records(self) -> list[_Record]:
        out = [_Record(sort_key(p), n, p) for p, n in self.emit.items()]
        for path in self.whiteouts:
            wh = _whiteout_of(path)
            out.append(_Record(sort_key(wh), None, wh, _WHITEOUT))
        out.sort(key=lambda r: r.key)
        return out


def _same_meta(u: Node, lo: Node, *, mtime: bool = True) -> bool:
    su, sl = u.st, lo.st
    if (
        su.st_mode != sl.st_mode
        or su.st_uid != sl.st_uid
        or su.st_gid != sl.st_gid
        or u.xattrs != lo.xattrs
        or u.linkname != lo.linkname
    ):
        return False
    if mtime and su.st_mtime_ns != sl.st_mtime_ns:
        return False
    kind = u.kind
    if kind is EntryType.FILE:
        return su.st_size == sl.st_size
    if kind in (EntryType.CHAR, EntryType.BLOCK):
        return su.st_rdev == sl.st_rdev
    return True


def _entry(node: Node, name: str, clamp: int | None) -> Entry:
    st = node.st
    mtime = st.st_mtime_ns if clamp is None else min(st.st_mtime_ns, clamp)
    kind = node.kind
    dev = kind in (EntryType.CHAR, EntryType.BLOCK)
    xattrs = node.xattrs
    if "\0metacopy" in xattrs:
        xattrs = {k: v for k, v in xattrs.items() if k != "\0metacopy"}
    return Entry(
        name=name,
        type=kind,
        mode=st.st_mode & 0o7777,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind is EntryType.FILE else 0,
        mtime_ns=mtime,
        linkname=node.linkname,
        devmajor=os.major(st.st_rdev) if dev else 0,
        devminor=os.minor(st.st_rdev) if dev else 0,
        xattrs=xattrs,
    )


def _write(
    records: Iterable[_Record],
    up: TreeReader,
    low: TreeReader | None,
    writer: TarWriter,
    clamp: int | None,
) -> LayerStats:
    entries = files = nbytes = whiteouts = 0
    first_of: dict[tuple[int, int], str] = {}
    for rec in records:
        entries += 1
        node = rec.node
        if node is None:
            whiteouts += 1
            writer.add(Entry(name=rec.name, type=EntryType.FILE, mode=0o644, mtime_ns=0))
            continue
        if node.kind is not EntryType.DIR and node.st.st_nlink > 1:
            first = first_of.setdefault(node.inode, rec.name)
            if first != rec.name:
                writer.add(
                    Entry(
                        name=rec.name,
                        type=EntryType.HARDLINK,
                        mode=node.st.st_mode & 0o7777,
                        uid=node.st.st_uid,
                        gid=node.st.st_gid,
                        mtime_ns=_entry(node, rec.name, clamp).mtime_ns,
                        linkname=first,
                    )
                )
                continue
        entry = _entry(node, rec.name, clamp)
        if node.kind is not EntryType.FILE or not entry.size:
            writer.add(entry)
            if node.kind is EntryType.FILE:
                files += 1
            continue
        fd = _open_content(node, up, low)
        with open(fd, "rb", buffering=0, closefd=True) as content:
            writer.add(entry, content)
        files += 1
        nbytes += entry.size
    return LayerStats(entries=entries, files=files, bytes=nbytes, whiteouts=whiteouts)


def _open_content(node: Node, up: TreeReader, low: TreeReader | None) -> int:
    if "\0metacopy" not in node.xattrs:
        return up.open_file(node)
    # A metacopy upper file holds metadata only; its bytes are in the lower layers.
    if low is None:
        raise Unsupported(
            f"{node.path!r} in the overlay upper dir is a metacopy file",
            hint="pass the lower layers as lower_view, or mount with metacopy=off",
        )
    try:
        return fsops.open_beneath(low.fd, node.path, os.O_RDONLY)
    except OSError as exc:
        raise fsops.os_error("read lower data of", node.path, exc) from exc
