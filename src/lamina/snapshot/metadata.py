"""The snapshot metadata file: ``<snapshotter root>/metadata.json``, replaced atomically.

Writers read, change and write the whole file under an exclusive flock on
``metadata.lock`` (so concurrent processes never lose an update) and replace it by
rename after an fsync (so a crash leaves the old or the new file, never a torn one).
Readers take no lock: rename(2) is atomic, a reader sees one whole version.

Format (lamina's own, versioned)::

    {"schemaVersion": 1, "nextId": 8,
     "snapshots": {"<key or name>": {"id": 3, "kind": "committed", "parent": "<name>"|null,
                                     "labels": {...}, "created": "2024-01-01T00:00:00Z"}}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lamina.atomic import write_atomic
from lamina.errors import InvalidFormat, LaminaError
from lamina.lightstd import Flock
from lamina.snapshot.api import Kind
from lamina.stateroot import SNAPSHOT_LOCK as LOCK
from lamina.stateroot import SNAPSHOT_METADATA as METADATA
from lamina.stateroot import SNAPSHOT_SCHEMA_VERSION as SCHEMA_VERSION

_HINT = "the snapshot metadata is damaged; remove the snapshots directory to start afresh"


@dataclass(frozen=True, slots=True)
class Record:
    """One snapshot's entry in the metadata file."""

    id: int
    kind: Kind
    parent: str | None
    labels: Mapping[str, str]
    created: str


@dataclass(slots=True)
class State:
    """One version of the metadata; mutated only inside :meth:`MetaFile.update`."""

    next_id: int = 1
    records: dict[str, Record] = field(default_factory=dict)

    def children(self, name: str) -> list[str]:
        return [key for key, rec in self.records.items() if rec.parent == name]

    def ids(self) -> set[int]:
        return {rec.id for rec in self.records.values()}


def _parse(data: bytes, path: str) -> State:
    try:
        doc = json.loads(data)
        if doc.get("schemaVersion") != SCHEMA_VERSION:
            raise InvalidFormat(
                f"{path} has schemaVersion {doc.get('schemaVersion')!r}, not {SCHEMA_VERSION}",
                hint="this lamina is older than the one that wrote it",
            )
        records = {}
        for name, raw in doc["snapshots"].items():
            parent = raw["parent"]
            labels = raw["labels"]
            if not isinstance(raw["id"], int) or raw["id"] < 1:
                raise InvalidFormat(f"{path}: snapshot {name!r} has a bad id", hint=_HINT)
            if parent is not None and not isinstance(parent, str):
                raise InvalidFormat(f"{path}: snapshot {name!r} has a bad parent", hint=_HINT)
            if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise InvalidFormat(f"{path}: snapshot {name!r} has bad labels", hint=_HINT)
            records[name] = Record(
                id=raw["id"],
                kind=Kind(raw["kind"]),
                parent=parent,
                labels=MappingProxyType(labels),
                created=str(raw["created"]),
            )
        next_id = doc["nextId"]
        if not isinstance(next_id, int) or next_id < 1:
            raise InvalidFormat(f"{path}: bad nextId", hint=_HINT)
        return State(next_id=next_id, records=records)
    except LaminaError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidFormat(f"{path} is not valid snapshot metadata: {exc}", hint=_HINT) from exc


def _serialize(state: State) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "nextId": state.next_id,
        "snapshots": {
            name: {
                "id": rec.id,
                "kind": rec.kind.value,
                "parent": rec.parent,
                "labels": dict(rec.labels),
                "created": rec.created,
            }
            for name, rec in sorted(state.records.items())
        },
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


class MetaFile:
    """The metadata file of one snapshotter root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = os.path.join(root, METADATA)
        self.lock_path = os.path.join(root, LOCK)

    def read(self) -> State:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return State()
        return _parse(data, self.path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive metadata lock (no read, no write)."""
        with Flock(self.lock_path):
            yield

    @contextmanager
    def update(self) -> Iterator[State]:
        """Read the state under the lock, let the caller change it, write it back.

        The write happens when the block exits normally and only if the state changed;
        an exception inside the block leaves the file as it was.
        """
        with self.locked():
            state = self.read()
            before = _serialize(state)
            yield state
            after = _serialize(state)
            if after != before:
                self._write(after)

    def _write(self, data: bytes) -> None:
        write_atomic(self.path, data, 0o600)
