"""The build cache: what a file step (RUN, COPY, ADD, WORKDIR) made, by content key.

A step's **key** is a SHA-256 over canonical JSON of the key of the step below it (or
the base: an image's config digest, ``scratch``, or the last key of a stage), and the
step's inputs in the spirit of BuildKit: the instruction after expansion; for RUN the
environment it sees (ENV and the ARGs in scope), user, working directory, shell,
network and its mount specs (a secret by id and target, never by content); for COPY and
ADD the checksum of the files they select (contents and modes, no mtimes), the
destination and every flag. Metadata instructions do not move the key: a LABEL change
does not rebuild the RUN below it.

A **record** is small JSON: the layer descriptor and diff_id the step made (or
``empty`` when it changed nothing, which BuildKit writes as an ``empty_layer`` history
entry), and when it was made (the history's ``created``, so a cached rebuild gives the
same image ID). Records live in ``<root>/cache/build/<key>.json``, each written
atomically (temp, fsync, rename), so a build killed at any point leaves whole records or
none. A record points at a blob, and the records are gc roots: ``lamina prune`` keeps the
layers the cache names (as ``docker image prune`` keeps the build cache) and drops only
records whose blob is gone. ``lamina prune --build-cache`` also drops the records whose
layer nothing else needs, with those layers (records of layers images still hold cost
nothing and stay); ``lamina builder prune`` drops every record, and the blobs only they
named. Both plan, then apply (:meth:`BuildCache.plan_prune`,
:meth:`BuildCache.apply_prune`): one code path for the dry run and the real one.
:meth:`BuildCache.get` still checks that the layer blob exists (another tool may have
removed it) and treats a record whose blob is gone as a miss (and deletes it).
:meth:`BuildCache.prune` drops every record.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina.atomic import write_atomic
from lamina.errors import InvalidArgument, InvalidFormat, LaminaError
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.stateroot import BUILD_CACHE
from lamina.store.api import Provider

SCHEMA = 1
_MAX_RECORD = 64 << 10
_HEX = frozenset("0123456789abcdef")


def cache_key(parent: str, kind: str, *parts: Any) -> str:
    """The key of a step: ``parent`` is the key below (or the base's), ``parts`` any
    JSON-able inputs (canonical JSON: sorted keys, no spaces)."""
    doc = json.dumps([parent, kind, *parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """What a step made: a layer (descriptor + diff_id), or nothing (``layer`` None)."""

    layer: Descriptor | None
    diff_id: Digest | None
    created: str

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "layer": None if self.layer is None else self.layer.to_json(),
            "diff_id": None if self.diff_id is None else str(self.diff_id),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, doc: Any) -> CacheRecord:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise InvalidFormat("build cache record has an unknown schema")
        layer_doc, diff_id = doc.get("layer"), doc.get("diff_id")
        created = doc.get("created")
        if not isinstance(created, str) or (layer_doc is None) != (diff_id is None):
            raise InvalidFormat("build cache record is incomplete")
        if layer_doc is None:
            return cls(None, None, created)
        if not isinstance(diff_id, str):
            raise InvalidFormat("build cache record has a bad diff_id")
        return cls(Descriptor.from_json(layer_doc), Digest.parse(diff_id), created)


@dataclass(frozen=True, slots=True)
class CachePrunePlan:
    """What a build cache prune drops: record keys (sorted) and the layer digests they
    name; ``keep_layers`` are the layers of the records that stay (gc roots, digest ->
    why), ``kept`` how many records stay."""

    drop: tuple[str, ...] = ()
    dropped_layers: frozenset[Digest] = frozenset()
    keep_layers: Mapping[Digest, str] = field(default_factory=dict)
    kept: int = 0


class BuildCache:
    """The records under ``<root>/cache/build``. Safe for concurrent builds: a record is
    only ever replaced whole, and two builds of one step write equivalent records."""

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, BUILD_CACHE)

    def _path(self, key: str) -> str:
        if len(key) != 64 or not set(key) <= _HEX:
            raise InvalidArgument(f"bad build cache key {key!r}")
        return os.path.join(self.dir, f"{key}.json")

    def get(self, key: str, store: Provider) -> CacheRecord | None:
        """The record of ``key`` whose layer blob is in ``store``, else None."""
        path = self._path(key)
        found, record = self._load(path)
        if record is None:
            if found:
                self._drop(path)  # damaged (cannot happen with atomic writes): a miss
            return None
        if record.layer is not None and not store.has(record.layer.digest):
            self._drop(path)  # its blob was pruned
            return None
        return record

    def read(self, key: str) -> CacheRecord | None:
        """The record of ``key`` as stored (None if absent or damaged); changes nothing."""
        return self._load(self._path(key))[1]

    @staticmethod
    def _load(path: str) -> tuple[bool, CacheRecord | None]:
        """Whether the record file exists, and its record (None if absent or damaged)."""
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_RECORD + 1)
        except FileNotFoundError:
            return False, None
        except OSError as exc:
            raise LaminaError(f"cannot read the build cache record {path}: {exc}") from exc
        try:
            return True, CacheRecord.from_json(json.loads(data))
        except (ValueError, LaminaError):
            return True, None

    def plan_prune(
        self,
        store: Provider,
        *,
        everything: bool = False,
        reclaim: frozenset[Digest] = frozenset(),
    ) -> CachePrunePlan:
        """Plan dropping the dead records (damaged, or naming a blob that is gone), those
        whose layer is in ``reclaim`` (blobs a gc will take unless the cache keeps them),
        or every record (``everything``); removes nothing."""
        drop: list[str] = []
        dropped: set[Digest] = set()
        keep: dict[Digest, str] = {}
        keys = self.keys()
        for key in keys:
            record = self.read(key)
            layer = None if record is None else record.layer
            dead = record is None or (layer is not None and not store.has(layer.digest))
            if dead or everything or (layer is not None and layer.digest in reclaim):
                drop.append(key)
                if layer is not None:
                    dropped.add(layer.digest)
            elif layer is not None:
                keep.setdefault(layer.digest, f"build cache record {key[:12]}")
        # A layer both a dropped and a kept record name stays named.
        return CachePrunePlan(
            tuple(drop), frozenset(dropped - set(keep)), keep, len(keys) - len(drop)
        )

    def apply_prune(self, plan: CachePrunePlan) -> int:
        """Drop the records ``plan`` lists; returns how many were there."""
        removed = 0
        for key in plan.drop:
            path = self._path(key)
            if os.path.lexists(path):
                self._drop(path)
                removed += 1
        return removed

    def put(self, key: str, record: CacheRecord) -> None:
        path = self._path(key)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            write_atomic(path, json.dumps(record.to_json(), sort_keys=True).encode())
        except OSError as exc:
            raise LaminaError(f"cannot write the build cache record {path}: {exc}") from exc

    def keys(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and len(n) == 69)

    def prune(self, keep: Sequence[str] = ()) -> int:
        """Delete every record (but those in ``keep``) and leftover temp files; returns
        how many records went."""
        kept = set(keep)
        removed = 0
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            name = entry.name
            if name.endswith(".tmp") or (name.endswith(".json") and name[:-5] not in kept):
                self._drop(entry.path)
                removed += name.endswith(".json")
        return removed

    @staticmethod
    def _drop(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LaminaError(f"cannot remove the build cache record {path}: {exc}") from exc
