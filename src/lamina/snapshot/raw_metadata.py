"""The snapshot metadata as a raw JSON document: active overlay snapshots made and
removed straight on ``metadata.json``, for ``lamina run``'s fast path
(:mod:`lamina.runtime.plans.replay`).

The steps, the lock and the file format are exactly those of
:class:`lamina.snapshot.base.DirSnapshotter` (``prepare`` of an active snapshot on a
committed parent, and ``remove``), so either side reads and cleans what the other made;
this module works on the raw JSON document instead of the :mod:`~lamina.snapshot.metadata`
value types because importing dataclasses costs the fast path more than its whole
budget. tests/snapshot/test_snapshot_raw_metadata.py holds the two to the same behaviour.
"""

from __future__ import annotations

import os
import time

from lamina.atomic import write_atomic
from lamina.errors import AlreadyExists, Conflict, InvalidFormat, NotFound
from lamina.lightstd import Flock, dumps, loads, suppress
from lamina.snapshot.fsutil import remove_tree
from lamina.snapshot.locked_dirs import Held
from lamina.stateroot import SNAPSHOT_FS, SNAPSHOT_TMP_PREFIX, SNAPSHOT_WORK, snapshot_dir
from lamina.stateroot import SNAPSHOT_LOCK as _LOCK
from lamina.stateroot import SNAPSHOT_METADATA as _METADATA
from lamina.stateroot import SNAPSHOT_SCHEMA_VERSION as SCHEMA_VERSION

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any


class ChainChanged(Conflict):
    """The parent's chain is not the one the caller expected (its plan is stale)."""


def _read(root: str) -> dict[str, Any]:
    path = os.path.join(root, _METADATA)
    try:
        with open(path, "rb") as fh:
            doc = loads(fh.read())
    except FileNotFoundError:
        return {"schemaVersion": SCHEMA_VERSION, "nextId": 1, "snapshots": {}}
    except ValueError as exc:
        raise InvalidFormat(f"{path} is not valid snapshot metadata: {exc}") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("schemaVersion") != SCHEMA_VERSION
        or not isinstance(doc.get("snapshots"), dict)
        or not isinstance(doc.get("nextId"), int)
    ):
        raise InvalidFormat(f"{path} is not snapshot metadata this lamina reads")
    return doc


def _write(root: str, doc: dict[str, Any]) -> None:
    # the document MetaFile writes (lamina.snapshot.metadata._serialize), compact
    write_atomic(os.path.join(root, _METADATA), dumps(doc, sort_keys=True).encode())


def _chain(records: dict[str, Any], parent: str) -> Iterator[int]:
    name: str | None = parent
    for _ in range(len(records) + 1):
        if name is None:
            return
        rec = records.get(name)
        if not isinstance(rec, dict) or rec.get("kind") != "committed":
            raise ChainChanged(f"parent snapshot {name!r} is gone or not committed")
        yield rec["id"]
        name = rec.get("parent")
    raise Conflict(f"snapshot metadata has a parent cycle at {parent!r}")


def prepare_active(root: str, key: str, parent: str, chain: Sequence[int]) -> int:
    """Make the active snapshot ``key`` on the committed ``parent`` and return its id.

    ``chain`` is the ids of ``parent`` and its ancestors, nearest first, as the caller
    last saw them (its cached run plan): Conflict when the metadata now says otherwise,
    so the caller never mounts layers that are not ``parent``'s.
    """
    with Flock(
        os.path.join(root, _LOCK)
    ):  # cleanup runs under this lock: it never sees `held` unlocked
        held = Held.make(root)
    sid = 0
    try:
        fs = os.path.join(held.path, SNAPSHOT_FS)
        os.mkdir(fs, 0o755)
        os.chmod(fs, 0o755)  # the root of a container: as images expect, whatever the umask
        os.mkdir(os.path.join(held.path, SNAPSHOT_WORK), 0o700)
        with Flock(os.path.join(root, _LOCK)):
            doc = _read(root)
            records = doc["snapshots"]
            if key in records:
                raise AlreadyExists(f"snapshot {key!r} already exists")
            if list(_chain(records, parent)) != list(chain):
                raise ChainChanged(f"parent {parent!r} changed since the run plan was made")
            sid = int(doc["nextId"])
            while os.path.lexists(snapshot_dir(root, sid)):
                sid += 1  # a crash left this id's directory behind
            doc["nextId"] = sid + 1
            held.rename(snapshot_dir(root, sid))
            records[key] = {
                "id": sid,
                "kind": "active",
                "parent": parent,
                "labels": {},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _write(root, doc)
    except BaseException:
        with suppress(OSError):
            remove_tree(held.path)
        raise
    finally:
        held.close()
    return sid


def remove_active(root: str, key: str) -> None:
    """Remove the active snapshot ``key`` (unmounted by the caller) and its directory;
    NotFound when there is none."""
    with Flock(os.path.join(root, _LOCK)):
        doc = _read(root)
        records = doc["snapshots"]
        rec = records.get(key)
        if not isinstance(rec, dict):
            raise NotFound(f"snapshot {key!r} does not exist")
        if rec.get("kind") != "active" or any(
            isinstance(r, dict) and r.get("parent") == key for r in records.values()
        ):
            raise Conflict(f"snapshot {key!r} is not a removable active snapshot")
        del records[key]
        _write(root, doc)
    held = Held.take(snapshot_dir(root, rec["id"]))
    if held is None:
        return  # gone, or a cleanup is deleting it right now
    try:
        held.rename(os.path.join(root, SNAPSHOT_TMP_PREFIX + os.urandom(8).hex()))
        remove_tree(held.path)
    finally:
        held.close()
