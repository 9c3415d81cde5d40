"""What both snapshotters share: metadata, directories, locking, crash cleanup.

Layout under the snapshotter root (0700, ARCHITECTURE.md §4)::

    metadata.json, metadata.lock   see metadata.py
    <id>/fs                        the snapshot's content (0755: it becomes a container's /)
    <id>/work                      overlay's work dir (overlay only)
    tmp-<random>/                  a snapshot being made or deleted, flock'ed by its owner

Ids are short decimal numbers (never reused while the metadata lives), so overlay option
strings stay short. A directory is named by its id only after it is complete, and the
metadata names an id only after the directory is there; :meth:`DirSnapshotter.cleanup`
deletes what a crash left between those steps. Directories still being filled carry an
flock of their maker, which the kernel drops when the maker dies: cleanup takes only
directories whose lock it can get.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import ClassVar

from lamina.errors import AlreadyExists, Conflict, InvalidArgument, LaminaError, NotFound
from lamina.snapshot.api import Info, Kind, Mount, Usage, check_labels, check_name
from lamina.snapshot.fsutil import disk_usage, os_error, remove_tree
from lamina.snapshot.locked_dirs import Held
from lamina.snapshot.metadata import MetaFile, Record, State
from lamina.stateroot import (
    SNAPSHOT_METADATA,
    SNAPSHOT_TMP_PREFIX,
    SNAPSHOTS,
    snapshot_dir,
    snapshot_fs,
    snapshot_work,
    snapshots_dir,
)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def make_private_dir(path: str) -> None:
    """mkdir 0700 (exactly, whatever the umask); an existing directory is fine."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise InvalidArgument(
                f"{path} exists and is not a directory", hint="pick another --root"
            ) from None
        return
    os.chmod(path, 0o700)


class DirSnapshotter:
    """The shared implementation; subclasses say how a snapshot is filled and mounted."""

    SUBDIR: ClassVar[str] = SNAPSHOTS
    overlay: ClassVar[bool] = False

    def __init__(self, root: str) -> None:
        """``root`` is the lamina root; the snapshots live in ``<root>/<SUBDIR>``."""
        base = os.path.abspath(root)
        self._check_root(snapshots_dir(base, self.SUBDIR))
        try:
            if not os.path.isdir(base):
                os.makedirs(base, mode=0o700, exist_ok=True)
            self._root = snapshots_dir(base, self.SUBDIR)
            make_private_dir(self._root)
        except OSError as exc:
            raise os_error(exc, f"create snapshot root under {root}") from exc
        self._meta = MetaFile(self._root)

    @property
    def root(self) -> str:
        return self._root

    # ----------------------------------------------------------- hooks for subclasses

    def _check_root(self, path: str) -> None:
        """Raise InvalidArgument if the snapshotter cannot work under ``path``."""

    def _fill(self, tmp: str, kind: Kind, chain: list[int]) -> None:
        """Make the snapshot's directories in ``tmp``; ``chain`` holds parent ids,
        nearest first."""
        raise NotImplementedError

    def _mounts(self, rec: Record, chain: list[int]) -> list[Mount]:
        raise NotImplementedError

    def _check_unmounted(self, key: str, rec: Record) -> None:
        """Conflict if the snapshot is visibly mounted (best effort)."""

    # ----------------------------------------------------------- paths

    def _dir(self, sid: int) -> str:
        return snapshot_dir(self._root, sid)

    def _fs(self, sid: int) -> str:
        return snapshot_fs(self._root, sid)

    def _work(self, sid: int) -> str:
        return snapshot_work(self._root, sid)

    # ----------------------------------------------------------- lookups

    @staticmethod
    def _get(state: State, key: str) -> Record:
        rec = state.records.get(key)
        if rec is None:
            raise NotFound(f"snapshot {key!r} does not exist")
        return rec

    @staticmethod
    def _chain(state: State, parent: str | None) -> list[tuple[str, int]]:
        """(name, id) of ``parent`` and its ancestors, nearest first."""
        out: list[tuple[str, int]] = []
        name = parent
        while name is not None:
            rec = state.records.get(name)
            if rec is None:
                if not out:
                    raise NotFound(f"parent snapshot {name!r} does not exist")
                raise NotFound(f"snapshot metadata names a missing parent {name!r}")
            if rec.kind is not Kind.COMMITTED:
                raise InvalidArgument(
                    f"parent {name!r} is {rec.kind.value}, not committed",
                    hint="only committed snapshots can be parents",
                )
            out.append((name, rec.id))
            if len(out) > len(state.records):
                raise Conflict(f"snapshot metadata has a parent cycle at {name!r}")
            name = rec.parent
        return out

    # ----------------------------------------------------------- the Protocol

    def prepare(
        self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(
        self, key: str, parent: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(
        self, kind: Kind, key: str, parent: str | None, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        check_name(key)
        if parent is not None:
            check_name(parent, "parent name")
        frozen = check_labels(labels)
        what = f"{'prepare' if kind is Kind.ACTIVE else 'view'} snapshot {key!r}"
        try:
            state = self._meta.read()
            if key in state.records:
                raise AlreadyExists(f"snapshot {key!r} already exists")
            chain = self._chain(state, parent)
            with self._meta.locked():  # cleanup runs under this lock: it never sees held unlocked
                held = Held.make(self._root)
            sid = 0
            try:
                self._fill(held.path, kind, [i for _, i in chain])
                with self._meta.update() as st:
                    if key in st.records:
                        raise AlreadyExists(f"snapshot {key!r} already exists")
                    if self._chain(st, parent) != chain:
                        raise Conflict(
                            f"parent {parent!r} changed while {key!r} was prepared",
                            hint="try again",
                        )
                    sid = st.next_id
                    while os.path.lexists(self._dir(sid)):
                        sid += 1  # a crash left this id's directory behind
                    st.next_id = sid + 1
                    # durable with the metadata: its write fsyncs this same directory
                    held.rename(self._dir(sid))
                    st.records[key] = Record(sid, kind, parent, frozen, _now())
                rec = st.records[key]
            except BaseException:
                self._undo_create(held, key, sid)
                raise
            finally:
                held.close()
            return self._mounts(rec, [i for _, i in chain])
        except OSError as exc:
            raise os_error(exc, what) from exc

    def _undo_create(self, held: Held, key: str, sid: int) -> None:
        with suppress(LaminaError, OSError):
            if sid:
                now = self._meta.read().records.get(key)
                if now is not None and now.id == sid:
                    return  # the metadata names it: it was made after all
            remove_tree(held.path)

    def mounts(self, key: str) -> list[Mount]:
        check_name(key)
        state = self._meta.read()
        rec = self._get(state, key)
        if rec.kind is Kind.COMMITTED:
            raise InvalidArgument(
                f"snapshot {key!r} is committed and has no mounts of its own",
                hint="make a view or prepare an active snapshot on top of it",
            )
        return self._mounts(rec, [i for _, i in self._chain(state, rec.parent)])

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        check_name(name, "snapshot name")
        check_name(key)
        frozen = check_labels(labels) if labels is not None else None
        try:
            with self._meta.update() as st:
                rec = self._get(st, key)
                if rec.kind is not Kind.ACTIVE:
                    raise InvalidArgument(
                        f"snapshot {key!r} is {rec.kind.value}; only active ones can be committed"
                    )
                if name in st.records:
                    raise AlreadyExists(
                        f"snapshot {name!r} already exists",
                        hint=f"remove the active snapshot {key!r} if it holds the same content",
                    )
                self._check_unmounted(key, rec)
                del st.records[key]
                st.records[name] = Record(
                    rec.id,
                    Kind.COMMITTED,
                    rec.parent,
                    rec.labels if frozen is None else frozen,
                    _now(),
                )
        except OSError as exc:
            raise os_error(exc, f"commit snapshot {key!r} as {name!r}") from exc

    def remove(self, key: str) -> None:
        check_name(key)
        try:
            with self._meta.update() as st:
                rec = self._get(st, key)
                children = st.children(key)
                if children:
                    shown = ", ".join(repr(c) for c in sorted(children)[:3])
                    raise Conflict(
                        f"snapshot {key!r} is the parent of {len(children)} other(s): {shown}",
                        hint="remove the snapshots on top of it first",
                    )
                self._check_unmounted(key, rec)
                del st.records[key]
            self._discard(self._dir(rec.id))
        except OSError as exc:
            raise os_error(exc, f"remove snapshot {key!r}") from exc

    def _discard(self, path: str) -> None:
        held = Held.take(path)
        if held is None:
            return  # gone, or a cleanup is deleting it right now
        try:
            held.rename(os.path.join(self._root, SNAPSHOT_TMP_PREFIX + os.urandom(8).hex()))
            remove_tree(held.path)
        finally:
            held.close()

    def stat(self, key: str) -> Info:
        check_name(key)
        return self._info(key, self._get(self._meta.read(), key))

    @staticmethod
    def _info(key: str, rec: Record) -> Info:
        return Info(rec.kind, key, rec.parent, rec.labels, rec.created)

    def walk(self) -> Iterator[Info]:
        state = self._meta.read()
        for key, rec in state.records.items():
            yield self._info(key, rec)

    def usage(self, key: str) -> Usage:
        path = self.path(key)
        try:
            size, inodes = disk_usage(path)
        except OSError as exc:
            raise os_error(exc, f"disk usage of snapshot {key!r}") from exc
        return Usage(size=size, inodes=inodes)

    def upper_dir(self, key: str) -> str:
        check_name(key)
        rec = self._get(self._meta.read(), key)
        if rec.kind is not Kind.ACTIVE:
            raise InvalidArgument(f"snapshot {key!r} is {rec.kind.value}, not active")
        return self._fs(rec.id)

    def path(self, key: str) -> str:
        check_name(key)
        return self._fs(self._get(self._meta.read(), key).id)

    def parents(self, key: str) -> list[str]:
        check_name(key)
        state = self._meta.read()
        return [name for name, _ in self._chain(state, self._get(state, key).parent)]

    def cleanup(self) -> int:
        victims: list[Held] = []
        try:
            with self._meta.locked():
                ids = self._meta.read().ids()
                for name in os.listdir(self._root):
                    path = os.path.join(self._root, name)
                    if name.startswith(f".{SNAPSHOT_METADATA}."):
                        os.unlink(path)  # a writer that died (writers hold our lock)
                        continue
                    orphan = name.isdigit() and int(name) not in ids
                    if not (orphan or name.startswith(SNAPSHOT_TMP_PREFIX)):
                        continue
                    held = Held.take(path)
                    if held is None:
                        continue
                    victims.append(held)
                    if orphan:
                        held.rename(
                            os.path.join(self._root, SNAPSHOT_TMP_PREFIX + os.urandom(8).hex())
                        )
            for held in victims:
                remove_tree(held.path)
        except OSError as exc:
            raise os_error(exc, f"clean up {self._root}") from exc
        finally:
            for held in victims:
                held.close()
        return len(victims)
