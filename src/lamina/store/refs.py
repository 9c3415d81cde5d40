"""The ref index: ``<root>/refs.json``, names to descriptors, replaced atomically.

Writers read, modify and write the whole file under an exclusive flock on
``locks/refs.lock`` (so concurrent updates from several processes never lose one), and
replace it by rename after an fsync (so a crash leaves the old or the new file, never a
torn one). Readers take no lock: rename(2) is atomic, a reader sees one whole version.

File format (lamina's own, versioned)::

    {"schemaVersion": 1, "refs": {"<name>": <descriptor JSON>, ...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from lamina.atomic import fsync_dir, write_all
from lamina.errors import InvalidArgument, InvalidFormat, LaminaError
from lamina.oci.descriptor import Descriptor
from lamina.stateroot import refs_file
from lamina.store.locks import exclusive

SCHEMA_VERSION = 1
MAX_REF_NAME = 4096

T = TypeVar("T")


def check_ref_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgument("a ref name must be a non-empty string")
    if len(name) > MAX_REF_NAME:
        raise InvalidArgument(f"ref name is {len(name)} characters, over {MAX_REF_NAME}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidArgument(f"ref name {name!r} contains control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"ref name {name!r} is not valid Unicode text") from exc


class RefFile:
    """The ref index file. Thread-safe: the cache is replaced, never mutated."""

    def __init__(self, root: str, lock_path: str) -> None:
        self._dir = root
        self._path = refs_file(root)
        # One fixed temp name: only the holder of the exclusive lock writes it, and a
        # crash's leftover is simply truncated by the next writer.
        self._tmp = self._path + ".tmp"
        self._lock = lock_path
        self._hint = f"restore {self._path} from a backup or remove it (all tags are lost)"
        # (file bytes, parsed refs): reading is cheap, validating every descriptor is not.
        self._cache: tuple[bytes, dict[str, Descriptor]] = (b"", {})

    def _read_bytes(self) -> bytes:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return b""
        try:
            parts: list[bytes] = []
            while chunk := os.read(fd, 1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _load_raw(self, raw: bytes) -> dict[str, Any]:
        """The ``refs`` object of the file as plain JSON (empty for a missing file)."""
        if not raw:
            return {}
        try:
            doc: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidFormat(
                f"ref index {self._path} is not valid JSON", hint=self._hint
            ) from exc
        if not isinstance(doc, dict) or doc.get("schemaVersion") != SCHEMA_VERSION:
            raise InvalidFormat(
                f"ref index {self._path} has an unknown format (want schemaVersion "
                f"{SCHEMA_VERSION})",
                hint=self._hint,
            )
        refs = doc.get("refs")
        if not isinstance(refs, dict):
            raise InvalidFormat(f"ref index {self._path} lacks a refs object", hint=self._hint)
        return refs

    def _descriptor(self, name: str, value: Any) -> Descriptor:
        try:
            return Descriptor.from_json(value, f"ref {name!r}")
        except LaminaError as exc:
            raise InvalidFormat(
                f"ref index {self._path}: {exc.message}", hint=f"delete the ref {name!r}"
            ) from exc

    def read(self) -> dict[str, Descriptor]:
        raw = self._read_bytes()
        cached_raw, cached = self._cache
        if raw != cached_raw:
            cached = {k: self._descriptor(k, v) for k, v in self._load_raw(raw).items()}
            self._cache = (raw, cached)
        return dict(cached)

    def get(self, name: str) -> Descriptor | None:
        raw = self._read_bytes()
        cached_raw, cached = self._cache
        if raw == cached_raw:
            return cached.get(name)
        value = self._load_raw(raw).get(name)
        return None if value is None else self._descriptor(name, value)

    def update(self, mutate: Callable[[dict[str, Any]], tuple[bool, T]]) -> T:
        """Run ``mutate`` on the refs as JSON objects under the lock; write if it changed them.

        Only what ``mutate`` adds is re-serialised; entries it does not touch are copied
        as they are, so an update costs one parse and one dump of the file.
        """
        with exclusive(self._lock, what="the ref index lock"):
            refs = self._load_raw(self._read_bytes())
            changed, result = mutate(refs)
            if changed:
                self._write(refs)
            return result

    def _write(self, refs: dict[str, Any]) -> None:
        doc = {"schemaVersion": SCHEMA_VERSION, "refs": {name: refs[name] for name in sorted(refs)}}
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self._tmp, flags, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self._tmp, self._path)
        fsync_dir(self._dir)
