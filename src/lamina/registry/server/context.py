"""What every request handler of the registry server shares: the storage driver, how to
call it (inline for quick local metadata, in a thread otherwise), upload locks, and the
translation of lamina errors into distribution-spec refusals."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from aiohttp import web

from lamina.errors import (
    DigestMismatch,
    InvalidArgument,
    LaminaError,
    LimitExceeded,
    NotFound,
    SizeMismatch,
)
from lamina.registry import protocol as p
from lamina.registry import routes as r
from lamina.registry.authn.api import Authenticator
from lamina.registry.server.limits import RETRY_AFTER, ConnectionGuard, Limits
from lamina.registry.server.metrics import Metrics
from lamina.registry.storage.api import RegistryStorage
from lamina.registry.storage.filesystem import FilesystemStorage

T = TypeVar("T")

JSON = "application/json"
# Body bytes a handler read and sent, for the metrics.
BYTES_IN = web.RequestKey("lamina_bytes_in", int)
BYTES_OUT = web.RequestKey("lamina_bytes_out", int)
# Headers on every /v2 answer (distribution-spec "Determining Support").
BASE_HEADERS = dict(p.API_VERSION_HEADERS)

_NOT_FOUND_CODES = {
    r.BLOB: "BLOB_UNKNOWN",
    r.BLOB_DELETE: "BLOB_UNKNOWN",
    r.UPLOAD_MOUNT: "BLOB_UNKNOWN",
    r.MANIFEST: "MANIFEST_UNKNOWN",
    r.MANIFEST_DELETE: "MANIFEST_UNKNOWN",
    r.MANIFEST_PUT: "MANIFEST_UNKNOWN",
    r.UPLOAD_START: "BLOB_UPLOAD_UNKNOWN",
    r.UPLOAD_MONOLITHIC: "BLOB_UPLOAD_UNKNOWN",
    r.UPLOAD_PATCH: "BLOB_UPLOAD_UNKNOWN",
    r.UPLOAD_FINISH: "BLOB_UPLOAD_UNKNOWN",
    r.UPLOAD_STATUS: "BLOB_UPLOAD_UNKNOWN",
    r.UPLOAD_CANCEL: "BLOB_UPLOAD_UNKNOWN",
    r.TAGS: "NAME_UNKNOWN",
}


class Context:
    """Shared state of one server process (one per ``make_app``)."""

    def __init__(
        self,
        storage: RegistryStorage,
        authenticator: Authenticator | None,
        metrics: Metrics | None,
        upload_ttl: float,
        chunk_min_length: int,
        *,
        limits: Limits | None = None,
    ) -> None:
        self.storage = storage
        self.authenticator = authenticator
        self.metrics = metrics
        self.upload_ttl = upload_ttl
        self.chunk_min_length = chunk_min_length
        self.limits = limits or Limits()
        # Set by ``serve`` when connections go through its guard (header/keep-alive
        # deadlines); None under a bare aiohttp runner (tests, embedding).
        self.guard: ConnectionGuard | None = None
        # Upload bodies being read, by peer address (the per-client cap).
        self.uploading: dict[str, int] = {}
        # Local filesystem metadata calls (stat, a few-byte read) take microseconds: a
        # thread hop would cost more than the call, so they run on the loop.
        self.local = isinstance(storage, FilesystemStorage)
        # One writer per upload session (the storage contract asks the server to
        # serialise PATCHes); last activity per session, for expiry.
        self.locks: dict[str, asyncio.Lock] = {}
        self.touched: dict[str, float] = {}
        # Parsed referrer candidates by manifest digest: bytes under a digest never
        # change, so a manifest is parsed once for every referrers query.
        self.subjects: dict[str, tuple[str, int, object] | None] = {}
        # Disk-bound work of transfers (hashing a finished upload, reading a blob for a
        # stream): its own threads so metadata calls never queue behind it. Nothing in
        # here ever waits on a peer: network waits happen on the event loop, where a
        # stalled client costs a file descriptor, not a thread.
        self.transfers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="registry-io")

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """A storage call that may take long (hashing, listing, remote I/O): in a thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def quick(self, fn: Callable[..., T], *args: object) -> T:
        """A small metadata *read* (stat, a few-byte file): inline for the local
        filesystem, in a thread otherwise. Writes fsync, so they always go to ``call``."""
        if self.local:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def transfer(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.transfers, functools.partial(fn, *args))

    @contextlib.contextmanager
    def upload_slot(self, peer: str | None) -> Iterator[None]:
        """Hold one of the peer's concurrent upload bodies; 429 when it has them all."""
        key = peer or "?"
        held = self.uploading.get(key, 0)
        if held >= self.limits.max_uploads_per_client:
            raise p.RegistryError(
                "TOOMANYREQUESTS",
                f"{held} uploads from {key} are in progress already",
                headers={"Retry-After": RETRY_AFTER},
                hint="finish or cancel the other uploads first",
            )
        self.uploading[key] = held + 1
        try:
            yield
        finally:
            left = self.uploading[key] - 1
            if left:
                self.uploading[key] = left
            else:
                del self.uploading[key]

    def lock(self, uuid: str) -> asyncio.Lock:
        lock = self.locks.get(uuid)
        if lock is None:
            lock = self.locks[uuid] = asyncio.Lock()
        return lock

    def touch(self, uuid: str) -> None:
        self.touched[uuid] = time.time()

    def forget(self, uuid: str) -> None:
        self.touched.pop(uuid, None)
        lock = self.locks.get(uuid)
        if lock is not None and not lock.locked():
            del self.locks[uuid]

    def close(self) -> None:
        self.transfers.shutdown(wait=False, cancel_futures=True)


def as_registry_error(exc: LaminaError, route: r.Route | None) -> p.RegistryError | None:
    """The distribution-spec refusal for a lamina error raised while serving ``route``;
    None for a failure of the registry itself (a 500)."""
    if isinstance(exc, p.RegistryError):
        return exc
    if isinstance(exc, NotFound):
        code = "NAME_UNKNOWN" if route is None else _NOT_FOUND_CODES.get(route.endpoint)
        return p.RegistryError(code or "NAME_UNKNOWN", exc.message, hint=exc.hint)
    if isinstance(exc, DigestMismatch):
        return p.RegistryError("DIGEST_INVALID", exc.message, hint=exc.hint)
    if isinstance(exc, SizeMismatch):
        return p.RegistryError("SIZE_INVALID", exc.message, hint=exc.hint)
    if isinstance(exc, LimitExceeded):
        return p.RegistryError("SIZE_INVALID", exc.message, status=413, hint=exc.hint)
    if isinstance(exc, InvalidArgument):
        code = "MANIFEST_INVALID" if route and route.endpoint == r.MANIFEST_PUT else None
        if route is not None and route.endpoint in (r.UPLOAD_PATCH, r.UPLOAD_FINISH):
            code = "BLOB_UPLOAD_INVALID"
        return p.RegistryError(code or "UNSUPPORTED", exc.message, status=400, hint=exc.hint)
    return None


def error_response(err: p.RegistryError) -> web.Response:
    body = p.error_body([err])
    headers = {**BASE_HEADERS, **err.headers}
    if body:
        headers["Content-Type"] = JSON
    return web.Response(status=err.status, body=body, headers=headers)


def internal_error(exc: LaminaError) -> web.Response:
    """A storage or backend failure: 500 with the spec's error body shape (distribution
    uses the code UNKNOWN for these), never a traceback."""
    body = json.dumps(
        {"errors": [{"code": "UNKNOWN", "message": exc.message}]}, separators=(",", ":")
    ).encode()
    return web.Response(status=500, body=body, headers={**BASE_HEADERS, "Content-Type": JSON})
