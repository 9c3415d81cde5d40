"""A declarative file-tree builder and a tree snapshot to compare trees in tests.

::

    build_tree(root, {
        "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\\n", mode=0o644),
        "bin/sh": Symlink("busybox"),
        "usr/lib/": Dir(mode=0o755),
        "link": Hardlink("etc/passwd"),
        "dev/null": Device("c", 1, 3),
        "fifo": Fifo(),
    })
    assert_trees_equal(tree_a, tree_b, mtimes=True)

Keys are paths relative to the root (a trailing ``/`` is allowed); parents that are not
in the spec are made as ``Dir()``. Every node gets ``DEFAULT_MTIME_NS`` unless it says
otherwise, so two builds of one spec are equal with mtimes. Nothing here follows a
symlink inside the tree, and nothing uses lamina: these helpers are the reference.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

DEFAULT_MTIME_NS = 1_700_000_000 * 10**9  # whole seconds, as tar stores them
XATTR_PREFIXES = ("user.", "security.capability", "trusted.overlay.opaque")
_NO_XATTRS: Mapping[str, bytes] = {}


@dataclass(frozen=True)
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = DEFAULT_MTIME_NS
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    sparse_size: int | None = None  # make the file this long with a hole after ``data``


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = DEFAULT_MTIME_NS
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Symlink:
    target: str
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = DEFAULT_MTIME_NS


@dataclass(frozen=True)
class Hardlink:
    target: str  # a path in the same spec (a File, Symlink, Fifo or Device)


@dataclass(frozen=True)
class Device:
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = DEFAULT_MTIME_NS


@dataclass(frozen=True)
class Fifo:
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = DEFAULT_MTIME_NS


@dataclass(frozen=True)
class Socket:
    mode: int = 0o755


Node = File | Dir | Symlink | Hardlink | Device | Fifo | Socket
Spec = Mapping[str, Node]


class Snap(NamedTuple):
    """What a test compares about one path (hardlinks as path groups, not inodes)."""

    kind: str  # file dir symlink char block fifo socket
    mode: int | None  # permission bits incl. setuid/setgid/sticky; None for symlinks
    uid: int
    gid: int
    size: int | None  # files only
    sha256: str | None  # files only
    target: str | None  # symlinks only
    links: frozenset[str] | None  # every path in the tree sharing this inode, if > 1
    rdev: tuple[int, int] | None  # devices only
    xattrs: tuple[tuple[str, bytes], ...]
    mtime_ns: int | None  # only when asked for


Snapshot = dict[str, Snap]


# --------------------------------------------------------------------------- building


def normalize(spec: Spec) -> dict[str, Node]:
    """Clean keys and add the implicit parent ``Dir()`` nodes."""
    out: dict[str, Node] = {}
    for raw, node in spec.items():
        path = raw.strip("/")
        if not path or ".." in path.split("/"):
            raise ValueError(f"bad spec path {raw!r}")
        out[path] = node
    for path in list(out):
        head = path.rpartition("/")[0]
        while head:
            parent = out.setdefault(head, Dir())
            if not isinstance(parent, Dir):
                raise ValueError(f"{path!r} is below {head!r}, which is not a Dir in the spec")
            head = head.rpartition("/")[0]
    return out


def _key(path: str) -> tuple[bytes, ...]:
    return tuple(os.fsencode(p) for p in path.split("/"))


def build_tree(root: str | os.PathLike[str], spec: Spec) -> None:
    """Make the spec's nodes under ``root`` (made if missing); see the module docstring."""
    Path(root).mkdir(parents=True, exist_ok=True)
    _materialize(Path(root), normalize(spec), existing=None)


def sync_tree(root: str | os.PathLike[str], spec: Spec, *, recreate: Iterable[str] = ()) -> None:
    """Make the tree at ``root`` equal to ``spec`` (with mtimes) with few changes.

    Paths that already match are left alone (so an overlay mount does not copy them
    up); whatever differs is removed and made again (whole hardlink groups when their
    membership changes); directories in ``recreate`` are removed and made afresh even if
    they match (on an overlay mount this gives an opaque directory).
    """
    root = Path(root)
    want = normalize(spec)
    expected = spec_snapshot(want)
    current = snapshot_tree(root, mtimes=True)
    doomed = {p.strip("/") for p in recreate}
    for path, snap in current.items():
        exp = expected.get(path)
        if exp is None or exp.kind != snap.kind or (snap.kind != "dir" and exp != snap):
            doomed.add(path)
    # A removed name breaks its hardlink group: the other names must be made again too.
    grown = True
    while grown:
        grown = False
        for path, snap in current.items():
            if snap.links and _under(path, doomed):
                for member in snap.links - doomed:
                    doomed.add(member)
                    grown = True
    removed: set[str] = set()
    for path in sorted(doomed, key=_key):
        if any(path.startswith(r + "/") for r in removed):
            continue
        _remove(root / path)
        removed.add(path)
    existing = {p for p in current if not any(p == r or p.startswith(r + "/") for r in removed)}
    _materialize(root, want, existing=existing)


def _under(path: str, roots: set[str]) -> bool:
    head = path
    while head:
        if head in roots:
            return True
        head = head.rpartition("/")[0]
    return False


def _remove(path: Path) -> None:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        for child in list(os.scandir(path)):
            _remove(Path(child.path))
        path.rmdir()
    else:
        path.unlink()


def _materialize(root: Path, want: dict[str, Node], existing: set[str] | None) -> None:
    order = sorted(want, key=_key)
    made: list[str] = []
    for path in order:
        node = want[path]
        full = root / path
        if existing is not None and path in existing:
            continue
        if isinstance(node, Dir):
            full.mkdir(mode=0o700)
        elif isinstance(node, File):
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, node.data)
                if node.sparse_size is not None:
                    os.ftruncate(fd, node.sparse_size)
            finally:
                os.close(fd)
        elif isinstance(node, Symlink):
            os.symlink(node.target, full)
        elif isinstance(node, Device):
            kind = stat.S_IFCHR if node.kind == "c" else stat.S_IFBLK
            os.mknod(full, kind | 0o600, os.makedev(node.major, node.minor))
        elif isinstance(node, Fifo):
            os.mkfifo(full, 0o600)
        elif isinstance(node, Socket):
            import socket

            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(full))
            os.chmod(full, node.mode)
            continue
        else:
            continue  # hardlinks below, once every target exists
        made.append(path)
    for path in order:
        node = want[path]
        if isinstance(node, Hardlink) and (existing is None or path not in existing):
            os.link(root / node.target.strip("/"), root / path, follow_symlinks=False)
    for path in made:
        node = want[path]
        if not isinstance(node, Dir):
            _set_meta(root / path, node, existing=False)
    # Directories last and deepest first: their mtimes must survive their children.
    for path in reversed(order):
        node = want[path]
        if isinstance(node, Dir):
            _set_meta(root / path, node, existing=existing is not None)


def _set_meta(full: Path, node: Node, *, existing: bool) -> None:
    assert not isinstance(node, Hardlink | Socket)
    st = full.lstat()
    xattrs = getattr(node, "xattrs", _NO_XATTRS)
    if existing and isinstance(node, Dir):
        current = dict(_xattrs(full))
        same = (
            stat.S_IMODE(st.st_mode) == node.mode
            and (st.st_uid, st.st_gid) == (node.uid, node.gid)
            and current == dict(xattrs)
            and (node.mtime_ns is None or st.st_mtime_ns == node.mtime_ns)
        )
        if same:
            return
        for key in current:
            if key not in xattrs:
                os.removexattr(full, key, follow_symlinks=False)
    if (st.st_uid, st.st_gid) != (node.uid, node.gid) or not existing:
        os.chown(full, node.uid, node.gid, follow_symlinks=False)
    if not isinstance(node, Symlink):
        os.chmod(full, node.mode)  # not a symlink: nothing to follow
    for key, value in sorted(xattrs.items()):
        os.setxattr(full, key, value, follow_symlinks=False)
    if node.mtime_ns is not None:
        os.utime(full, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)


# --------------------------------------------------------------------------- snapshots


def _xattrs(
    full: Path, prefixes: tuple[str, ...] = XATTR_PREFIXES
) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    out = []
    for name in sorted(names):
        if name.startswith(prefixes):
            out.append((name, os.getxattr(full, name, follow_symlinks=False)))
    return tuple(out)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    raise AssertionError(f"unknown file type {mode:o}")


def snapshot_tree(
    root: str | os.PathLike[str],
    *,
    mtimes: bool = False,
    dir_mtimes: bool | None = None,
    xattr_prefixes: tuple[str, ...] = XATTR_PREFIXES,
) -> Snapshot:
    """Everything :class:`Snap` holds, for every path below ``root`` (not the root)."""
    root = Path(root)
    dir_mtimes = mtimes if dir_mtimes is None else dir_mtimes
    stats: dict[str, os.stat_result] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as it:
            for entry in it:
                path = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                stats[path] = st
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)
    groups: dict[tuple[int, int], set[str]] = {}
    for path, st in stats.items():
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), set()).add(path)
    out: Snapshot = {}
    for path in sorted(stats, key=_key):
        st = stats[path]
        kind = _kind(st.st_mode)
        full = root / path
        size = sha = target = rdev = links = None
        if kind == "file":
            size = st.st_size
            sha = hashlib.sha256(full.read_bytes()).hexdigest()
        elif kind == "symlink":
            target = os.readlink(full)
        elif kind in ("char", "block"):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        group = groups.get((st.st_dev, st.st_ino))
        if group is not None and len(group) > 1:
            links = frozenset(group)
        want_mtime = dir_mtimes if kind == "dir" else mtimes and kind != "socket"
        out[path] = Snap(
            kind=kind,
            mode=None if kind == "symlink" else stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=size,
            sha256=sha,
            target=target,
            links=links,
            rdev=rdev,
            xattrs=() if kind == "socket" else _xattrs(full, xattr_prefixes),
            mtime_ns=st.st_mtime_ns if want_mtime else None,
        )
    return out


def spec_snapshot(spec: Spec, *, mtimes: bool = True) -> Snapshot:
    """The snapshot a tree built from ``spec`` has (what :func:`snapshot_tree` returns)."""
    want = normalize(spec)
    groups: dict[str, set[str]] = {}
    for path, node in want.items():
        if isinstance(node, Hardlink):
            groups.setdefault(node.target.strip("/"), {node.target.strip("/")}).add(path)
    links_of: dict[str, frozenset[str]] = {}
    for members in groups.values():
        frozen = frozenset(members)
        for member in members:
            links_of[member] = frozen
    out: Snapshot = {}
    for path in sorted(want, key=_key):
        node = want[path]
        real = want[node.target.strip("/")] if isinstance(node, Hardlink) else node
        assert not isinstance(real, Hardlink), "a hardlink to a hardlink in the spec"
        links = links_of.get(path)
        mtime = getattr(real, "mtime_ns", None) if mtimes else None
        xattrs = tuple(sorted(getattr(real, "xattrs", _NO_XATTRS).items()))
        if isinstance(real, File):
            data = real.data
            if real.sparse_size is not None:
                data = data[: real.sparse_size].ljust(real.sparse_size, b"\0")
            snap = Snap(
                "file",
                real.mode,
                real.uid,
                real.gid,
                len(data),
                hashlib.sha256(data).hexdigest(),
                None,
                links,
                None,
                xattrs,
                mtime,
            )
        elif isinstance(real, Dir):
            snap = Snap(
                "dir", real.mode, real.uid, real.gid, None, None, None, None, None, xattrs, mtime
            )
        elif isinstance(real, Symlink):
            snap = Snap(
                "symlink", None, real.uid, real.gid, None, None, real.target, links, None, (), mtime
            )
        elif isinstance(real, Device):
            snap = Snap(
                "char" if real.kind == "c" else "block",
                real.mode,
                real.uid,
                real.gid,
                None,
                None,
                None,
                links,
                (real.major, real.minor),
                (),
                mtime,
            )
        elif isinstance(real, Fifo):
            snap = Snap(
                "fifo", real.mode, real.uid, real.gid, None, None, None, links, None, (), mtime
            )
        else:
            assert isinstance(real, Socket)
            snap = Snap("socket", real.mode, 0, 0, None, None, None, None, None, (), None)
        out[path] = snap
    return out


def _as_snapshot(tree: str | os.PathLike[str] | Snapshot, mtimes: bool) -> Snapshot:
    if isinstance(tree, dict):
        return tree
    return snapshot_tree(tree, mtimes=mtimes)


def diff_snapshots(a: Snapshot, b: Snapshot, *, mtimes: bool = False) -> list[str]:
    """Readable differences, one line per path and field."""
    lines = []
    for path in sorted(set(a) | set(b), key=_key):
        sa, sb = a.get(path), b.get(path)
        if sa is None:
            lines.append(f"+ {path} ({sb.kind if sb else '?'}) only in the second tree")
            continue
        if sb is None:
            lines.append(f"- {path} ({sa.kind}) only in the first tree")
            continue
        for name in Snap._fields:
            if name == "mtime_ns" and not mtimes:
                continue
            va, vb = getattr(sa, name), getattr(sb, name)
            if va != vb:
                if name == "mode" and va is not None and vb is not None:
                    va, vb = oct(va), oct(vb)
                lines.append(f"~ {path}: {name} {va!r} != {vb!r}")
    return lines


def assert_trees_equal(
    a: str | os.PathLike[str] | Snapshot,
    b: str | os.PathLike[str] | Snapshot,
    *,
    mtimes: bool = False,
    ignore: Iterable[str] = (),
) -> None:
    """Assert two trees (paths or snapshots) are equal; the message lists the differences."""
    sa, sb = _as_snapshot(a, mtimes), _as_snapshot(b, mtimes)
    skip = set(ignore)
    sa = {k: v for k, v in sa.items() if k not in skip}
    sb = {k: v for k, v in sb.items() if k not in skip}
    lines = diff_snapshots(sa, sb, mtimes=mtimes)
    if lines:
        shown = "\n".join(lines[:60])
        more = f"\n... and {len(lines) - 60} more" if len(lines) > 60 else ""
        raise AssertionError(f"trees differ ({len(lines)} differences):\n{shown}{more}")


# --------------------------------------------------------------------------- overlayfs


@contextlib.contextmanager
def overlay_mount(
    lowers: Sequence[str | os.PathLike[str]],
    upper: str | os.PathLike[str],
    work: str | os.PathLike[str],
    merged: str | os.PathLike[str],
) -> Iterator[Path]:
    """Mount overlayfs (first lower on top) and unmount on exit; needs root."""
    for d in (upper, work, merged):
        Path(d).mkdir(parents=True, exist_ok=True)
    lowerdir = ":".join(str(p) for p in lowers)
    opts = f"lowerdir={lowerdir},upperdir={upper},workdir={work},index=off,metacopy=off"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
        check=True,
        capture_output=True,
    )
    try:
        yield Path(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True, capture_output=True)
