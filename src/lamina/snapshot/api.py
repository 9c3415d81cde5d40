"""Contracts of the snapshot package: snapshots, their mounts, and the Snapshotter.

A snapshot is a directory tree managed by a :class:`Snapshotter`, in one of three kinds
(the model of containerd's snapshots package):

- **active** (:attr:`Kind.ACTIVE`), named by a *key*: writable, made by :meth:`prepare`
  on top of an optional committed *parent*. Its mounts give the parent's files with
  copy-on-write; what the user writes lands in its :meth:`~Snapshotter.upper_dir`.
- **committed** (:attr:`Kind.COMMITTED`), named by a *name*: immutable, made by
  :meth:`~Snapshotter.commit` of an active snapshot. Only committed snapshots can be
  parents. Image layers are committed snapshots named by their ChainID, so each layer is
  unpacked once per host and shared by every image and container that has it.
- **view** (:attr:`Kind.VIEW`), named by a *key*: a read-only look at a committed parent
  (made by :meth:`~Snapshotter.view`); it can be removed but never committed.

Keys and names share one namespace: a committed snapshot's name cannot be an active
snapshot's key. They are free-form text (no control characters, at most
:data:`MAX_NAME_LENGTH` characters) and never become paths: on disk a snapshot is a
short numeric id.

Lifecycle::

    prepare(key, parent) ──▶ ACTIVE ── mount it, write into it ──▶ commit(name, key) ──▶ COMMITTED
                               │                                    (the key is gone)       │
                               └──▶ remove(key)                       view(key, name) ◀─────┘
                                                                      prepare(key2, name)

Mounts are data (:class:`Mount`): a snapshotter never calls mount(2). The caller mounts
them with :func:`lamina.snapshot.mount.mount_all`, the only code that does, and unmounts
before it commits or removes the snapshot (an overlay upper dir must be quiescent before
it becomes a lower dir of other mounts; deleting a mounted tree under a running container
is undefined).

Idempotency and races (several processes may share one snapshotter root):

- :meth:`prepare` / :meth:`view` of a taken key raise :class:`~lamina.errors.AlreadyExists`.
- :meth:`commit` to a taken name raises :class:`~lamina.errors.AlreadyExists` and leaves
  the active snapshot in place; an unpacker treats that as "another process unpacked this
  layer first" and removes its own key.
- :meth:`remove` of a missing key raises :class:`~lamina.errors.NotFound`; of a committed
  snapshot that still has children (committed, active or views) raises
  :class:`~lamina.errors.Conflict`.
- A parent that is missing or not committed: NotFound / InvalidArgument.

Crash safety: metadata lives in one small JSON file replaced atomically (write, fsync,
rename, fsync the directory) under an exclusive flock; each mutation reads, changes and
writes it under that lock, so concurrent processes never lose an update. A snapshot's
directory is made under ``tmp-*`` (locked by its maker while it fills) and renamed to its
id before the metadata names it; removal forgets the metadata first, then renames the
directory to ``tmp-*`` and deletes it. A process killed at any point therefore leaves at
worst unnamed directories, which :meth:`~Snapshotter.cleanup` deletes (it never touches a
directory a live process still holds). An active snapshot whose maker died is *not*
garbage to the snapshotter (a container may own it); its owner removes it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from lamina.errors import InvalidArgument

MAX_NAME_LENGTH = 1024
MAX_LABELS_BYTES = 4096  # containerd's cap on one snapshot's labels (keys + values)

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Kind(enum.Enum):
    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"


def check_name(name: str, what: str = "snapshot key") -> str:
    """Validate a key, name or parent; returns it unchanged."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"a {what} must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{what} is {len(name)} characters, over {MAX_NAME_LENGTH}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidArgument(f"{what} {name!r} contains control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} {name!r} is not valid Unicode text") from exc
    return name


def check_labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    """Validate labels (text keys and values, bounded); returns a read-only copy."""
    if not labels:
        return _EMPTY
    total = 0
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise InvalidArgument("snapshot labels must map non-empty strings to strings")
        total += len(k.encode()) + len(v.encode())
    if total > MAX_LABELS_BYTES:
        raise InvalidArgument(f"snapshot labels take {total} bytes, over {MAX_LABELS_BYTES}")
    return MappingProxyType(dict(labels))


@dataclass(frozen=True, slots=True)
class Info:
    """What :meth:`Snapshotter.stat` tells about one snapshot.

    ``name`` is the key of an active snapshot or view, or the name of a committed one;
    ``parent`` is the name of the committed snapshot below it (None for a base);
    ``created`` is an RFC 3339 UTC time with second precision.
    """

    kind: Kind
    name: str
    parent: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    created: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Disk use of one snapshot's own directory (not its parents): bytes allocated
    (st_blocks, hardlinked inodes counted once) and inodes."""

    size: int = 0
    inodes: int = 0


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount(2) to perform, as data: ``mount -t type -o options source target``.

    Examples: ``Mount("overlay", "overlay", ("lowerdir=/a:/b", "upperdir=/c",
    "workdir=/d", "index=off"))`` (``lowerdir`` newest layer first), ``Mount("bind",
    "/path", ("rbind", "rw"))``, ``Mount("bind", "/path", ("rbind", "ro"))``. Paths in
    options are absolute; :func:`lamina.snapshot.mount.mount_all` shortens them when the
    option string would exceed the kernel's page-size limit.
    """

    type: str
    source: str
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in (self.type, self.source, *self.options):
            if not isinstance(part, str) or "\0" in part:
                raise InvalidArgument(f"bad mount field {part!r}")
        if not self.type or not self.source:
            raise InvalidArgument("a mount needs a type and a source")

    @property
    def readonly(self) -> bool:
        """True when the mount is read-only (``ro`` option, or an overlay without upper)."""
        if "ro" in self.options:
            return True
        return self.type == "overlay" and not any(o.startswith("upperdir=") for o in self.options)

    def option(self, key: str) -> str | None:
        """The value of ``key=value`` in the options, or None."""
        prefix = key + "="
        for opt in self.options:
            if opt.startswith(prefix):
                return opt[len(prefix) :]
        return None


class Snapshotter(Protocol):
    """Snapshots on one host, keyed by text, returned as mounts (see the module docs).

    Implementations: :class:`~lamina.snapshot.overlay.OverlaySnapshotter` (kernel
    overlayfs: a layer is its own directory, stacked as a lower dir) and
    :class:`~lamina.snapshot.native.NativeSnapshotter` (full copies, bind mounts; for
    filesystems where overlay cannot run). Every method is safe to call from several
    processes at once on one root.
    """

    @property
    def root(self) -> str:
        """The directory that holds this snapshotter's state (0700)."""
        ...

    @property
    def overlay(self) -> bool:
        """True when an active snapshot's :meth:`upper_dir` holds only the changes over its
        parents, in overlayfs form (whiteouts are char 0/0 devices, opaque directories carry
        ``trusted.overlay.opaque``): apply layers into it in overlay mode and diff it as an
        upper dir. False when it holds the whole tree (apply in tree mode, diff against the
        parent's :meth:`path`)."""
        ...

    def prepare(
        self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Make an active snapshot ``key`` on top of committed ``parent``; its mounts.

        AlreadyExists if ``key`` is taken; NotFound if ``parent`` does not exist;
        InvalidArgument if ``parent`` is not committed.
        """
        ...

    def view(
        self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Make a read-only view ``key`` of committed ``parent`` (empty when None); its mounts.

        Errors as for :meth:`prepare`.
        """
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or view (the same as prepare/view returned).

        NotFound if missing; InvalidArgument for a committed snapshot (view it instead).
        """
        ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn active ``key`` into committed ``name``; afterwards ``key`` does not exist.

        Unmount ``key`` first. AlreadyExists if ``name`` is taken (``key`` is kept);
        NotFound if ``key`` is missing; InvalidArgument if it is not active.
        ``labels`` replace the active snapshot's labels when given.
        """
        ...

    def remove(self, key: str) -> None:
        """Delete a snapshot of any kind, and its directory.

        NotFound if missing; Conflict if other snapshots name it as parent.
        Unmount an active snapshot or view before removing it.
        """
        ...

    def stat(self, key: str) -> Info:
        """Info of one snapshot; NotFound if missing."""
        ...

    def walk(self) -> Iterator[Info]:
        """Info of every snapshot, in no particular order."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk use of the snapshot's own directory (for overlay: its upper dir / layer)."""
        ...

    def upper_dir(self, key: str) -> str:
        """The directory that takes an active snapshot's writes.

        Overlay: the upper dir (what ``lamina diff`` reads and the overlay applier fills);
        native: the whole tree. InvalidArgument unless ``key`` is active.
        """
        ...

    def path(self, key: str) -> str:
        """The snapshot's own content directory: for overlay a layer's own files (with
        overlay whiteouts), for native the whole tree; a view's is empty (mount the view).
        Read it; never write into a committed one."""
        ...

    def parents(self, key: str) -> list[str]:
        """Names of the committed chain below ``key``, nearest first."""
        ...

    def cleanup(self) -> int:
        """Delete directories left by crashed operations; returns how many were removed."""
        ...


def is_readonly(mounts: Sequence[Mount]) -> bool:
    """True when every mount in ``mounts`` is read-only."""
    return all(m.readonly for m in mounts)
