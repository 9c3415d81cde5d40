"""Where blobs were last seen: ``<root>/cache/registry-blob-sources.json``.

A pull records, for each blob, the ``registry/repository`` it came from; a push records
where it put them. A later push of the same blob to another repository of that registry
can then ask for a cross-repository mount instead of sending the bytes (dist-spec
"Mounting a blob from another repository"). It is only a hint: a wrong entry costs one
refused mount. Updates are read-modify-write under an flock, written atomically; the
file is capped (oldest digests dropped first).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable

from lamina.atomic import write_atomic
from lamina.oci.digest import Digest
from lamina.stateroot import BLOB_SOURCES

MAX_DIGESTS = 20_000
MAX_REPOS_PER_DIGEST = 8


class BlobSources:
    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, BLOB_SOURCES)
        self.dir = os.path.dirname(self.path)
        self._cache: dict[str, list[str]] | None = None  # read once per lookup run

    def _load(self) -> dict[str, list[str]]:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(64 << 20))
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
            return {}  # a cache: damaged means empty
        if not isinstance(doc, dict):
            return {}
        return {
            k: [r for r in v if isinstance(r, str)]
            for k, v in doc.items()
            if isinstance(k, str) and isinstance(v, list)
        }

    def lookup(self, registry: str, digest: Digest) -> tuple[str, ...]:
        """Repositories of ``registry`` that held ``digest``, most recent first."""
        prefix = registry + "/"
        if self._cache is None:
            self._cache = self._load()
        return tuple(
            name[len(prefix) :]
            for name in reversed(self._cache.get(str(digest), []))
            if name.startswith(prefix)
        )

    def record(self, registry: str, repository: str, digests: Iterable[Digest]) -> None:
        wanted = [str(d) for d in digests]
        if not wanted:
            return
        name = f"{registry}/{repository}"
        try:
            self._record(name, wanted)
        except OSError:
            return  # only a hint for later mounts: a read-only or full disk must not fail a pull

    def _record(self, name: str, wanted: list[str]) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        lock_fd = os.open(
            self.path + ".lock",
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            doc = self._load()
            for key in wanted:
                repos = [r for r in doc.pop(key, []) if r != name]
                repos.append(name)
                doc[key] = repos[-MAX_REPOS_PER_DIGEST:]  # re-inserted: now the newest
            while len(doc) > MAX_DIGESTS:
                del doc[next(iter(doc))]
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")).encode())
            self._cache = None
        finally:
            os.close(lock_fd)
