"""The S3 calls the registry driver makes, blocking, on aiobotocore.

aiobotocore (botocore's S3 model, signing and retries over aiohttp) runs on one private
event loop in a daemon thread; the driver's methods are blocking (the server runs them
in an executor), so each call here hands a coroutine to that loop and waits for it.
Requests are path-style (``/bucket/key``: SeaweedFS, MinIO and custom endpoints have no
per-bucket host names), payloads are signed, and transient failures (5xx, throttling,
dropped or refused connections) are retried by botocore's "standard" mode. Every
botocore error is wrapped here in a :class:`S3Error` (or NotFound) ``from`` it, with a
hint for the usual causes. Object bodies stream: :meth:`S3Client.get_stream` hands back
the open body, read piece by piece with :meth:`S3Client.read_body`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from lamina.errors import InvalidArgument, LaminaError, NotFound

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3.client import S3Client as Boto

T = TypeVar("T")

RETRIES = 6  # attempts per request (botocore "standard" mode: capped exponential backoff)
# 403 codes that mean the credentials, not the permissions, are wrong.
_AUTH_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed"}
)
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound", ""})


class S3Error(LaminaError):
    """An S3 request that failed: ``status`` (0 if no answer) and the S3 error ``code``."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Stream:
    """An object GET whose body is still on the wire: ``status`` 200 or 206, the object's
    ``total`` size, and the body (read with :meth:`S3Client.read_body`, then
    :meth:`S3Client.close_body`)."""

    status: int
    total: int
    body: StreamingBody


def _timestamp(text: str) -> datetime:
    # botocore's default parser (dateutil) is most of the time of a 1000-key listing;
    # S3 listings carry ISO 8601, headers (Last-Modified) RFC 1123 for botocore's own.
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return parse_timestamp(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_SESSION = get_session()
_SESSION.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)


class _Loop:
    """The process's one event loop for S3, in a daemon thread, started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="lamina-s3", daemon=True).start()
                cls._loop = loop
            return cls._loop


_CLIENTS: weakref.WeakSet[S3Client] = weakref.WeakSet()


class _Connection:
    """The open aiobotocore client of one :class:`S3Client`, held apart from it so that
    a finalizer can close it without keeping the S3Client alive."""

    __slots__ = ("boto",)

    def __init__(self) -> None:
        self.boto: Boto | None = None


def _close_dropped(conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
    # An S3Client dropped without close(): close its connections on the loop, rather than
    # let aiohttp find an unclosed session when the garbage collector takes it. Not
    # waited for: a finalizer may run on the loop's own thread.
    boto, conn.boto = conn.boto, None
    if boto is not None and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(boto.close(), loop)


@atexit.register
def _close_all() -> None:
    # Closed before exit: aiohttp warns about sessions collected unclosed.
    for client in list(_CLIENTS):
        client.close()


def _error(exc: ClientError | BotoCoreError, what: str, endpoint: str) -> LaminaError:
    if not isinstance(exc, ClientError):
        return S3Error(f"S3 {what} failed: {exc}", hint=f"is {endpoint} up?")
    error: dict[str, Any] = dict(exc.response.get("Error", {}))
    meta: dict[str, Any] = dict(exc.response.get("ResponseMetadata", {}))
    status = int(meta.get("HTTPStatusCode") or 0)
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    text = f"S3 {what} failed: {status or 'no answer'} {code} {message}".rstrip()
    if status == 404 and code in _MISSING:
        return NotFound(text)
    hint = None
    if status == 403 and code in _AUTH_CODES:
        hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the URL's keys) and region"
    elif status == 403:
        hint = "check the S3 credentials, and that their identity may use this bucket"
    elif code == "NoSuchBucket":
        hint = "create the bucket first"
    return S3Error(text, status=status, code=code, hint=hint)


class S3Client:
    """Blocking, thread safe access to one bucket of one S3 endpoint."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        creds: Credentials,
        *,
        region: str = "us-east-1",
        timeout: float = 120.0,
        retries: int = RETRIES,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(
                f"invalid S3 endpoint {endpoint!r}", hint="use http://HOST:PORT or https://HOST"
            )
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        self._creds = creds
        self._config = AioConfig(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": max(1, retries), "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=64,
            # Checksums only where S3 demands them: the payload's SHA-256 is signed
            # anyway, and a CRC32 would read every body once more.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._loop = _Loop.get()
        self._conn = _Connection()
        self._opening: asyncio.Lock | None = None
        _CLIENTS.add(self)
        weakref.finalize(self, _close_dropped, self._conn, self._loop)

    # -- the loop bridge ---------------------------------------------------------------
    async def _client(self) -> Boto:
        if self._conn.boto is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._conn.boto is None:
                    creator = _SESSION.create_client(
                        "s3",
                        endpoint_url=self.endpoint,
                        region_name=self.region,
                        aws_access_key_id=self._creds.access_key,
                        aws_secret_access_key=self._creds.secret_key,
                        aws_session_token=self._creds.session_token,
                        config=self._config,
                    )
                    self._conn.boto = await creator.__aenter__()
        return self._conn.boto

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _run(self, what: str, call: Callable[[Boto], Awaitable[T]]) -> T:
        """Run one call on the loop; botocore's errors come out as lamina's."""

        async def go() -> T:
            return await call(await self._client())

        try:
            return self._wait(go())
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, what, self.endpoint) from exc

    def close(self) -> None:
        """Close the connections; the next call opens new ones."""
        boto, self._conn.boto = self._conn.boto, None
        if boto is not None and not self._loop.is_closed():
            self._wait(boto.close())

    # -- objects -------------------------------------------------------------------------
    def create_bucket(self) -> None:
        try:
            self._run(f"create bucket {self.bucket}", lambda c: c.create_bucket(Bucket=self.bucket))
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(
        self,
        key: str,
        body: bytes | IO[bytes] | None,
        *,
        if_none_match: bool = False,
        if_match: str = "",
    ) -> str:
        """Store an object and return its ETag; a file body is sent whole, from its
        start (botocore rewinds it to 0 for a retry). ``if_none_match`` keeps an object
        already there, ``if_match`` replaces only that version: otherwise S3Error 412."""
        extra: dict[str, Any] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = if_match
        if body is not None and not isinstance(body, bytes):
            body.seek(0)
        answer = self._run(
            f"PUT {key}",
            lambda c: c.put_object(Bucket=self.bucket, Key=key, Body=body or b"", **extra),
        )
        return str(answer.get("ETag", ""))

    def get_bytes(self, key: str, limit: int) -> bytes:
        """A small object whole; InvalidArgument if it is larger than ``limit``."""
        return self.get_versioned(key, limit)[0]

    def get_versioned(self, key: str, limit: int) -> tuple[bytes, str]:
        """A small object whole and its ETag (for a later ``if_match``)."""

        async def call(c: Boto) -> tuple[bytes, str]:
            answer = await c.get_object(Bucket=self.bucket, Key=key)
            async with answer["Body"] as body:
                if answer["ContentLength"] > limit:
                    raise InvalidArgument(f"S3 object {key} is {answer['ContentLength']} bytes")
                return await body.read(), answer.get("ETag", "")

        return self._run(f"GET {key}", call)

    def get_stream(self, key: str, start: int, end: int | None) -> Stream | None:
        """GET bytes ``[start, end)`` (``end`` None: to the end) with the body left open;
        None if ``start`` is at or past the end (S3 answers 416)."""
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"

        async def call(c: Boto) -> Stream:
            answer = await c.get_object(Bucket=self.bucket, Key=key, Range=rng)
            status = int(answer["ResponseMetadata"]["HTTPStatusCode"])
            content_range = answer.get("ContentRange", "")
            try:
                total = int(content_range.rsplit("/", 1)[1]) if status == 206 else 0
            except (IndexError, ValueError) as exc:
                answer["Body"].close()
                raise S3Error(f"S3 GET {key}: bad Content-Range {content_range!r}") from exc
            return Stream(status, total or answer["ContentLength"], answer["Body"])

        try:
            return self._run(f"GET {key}", call)
        except S3Error as exc:
            if exc.status == 416:
                return None
            raise

    def read_body(self, body: StreamingBody, size: int) -> bytes:
        """Up to ``size`` bytes of an open body (fewer only at its end); raises what
        aiohttp/botocore raise when the connection drops (the reader resumes)."""

        async def fill() -> bytes:
            out = bytearray()
            while len(out) < size and (block := await body.read(size - len(out))):
                out += block
            return bytes(out)

        return self._wait(fill())

    def close_body(self, body: StreamingBody) -> None:
        # On the loop: aiohttp's response is not thread safe. A body not read to its end
        # takes its connection with it.
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(body.close)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = self._run(f"HEAD {key}", lambda c: c.head_object(Bucket=self.bucket, Key=key))
        except NotFound:
            return None
        return ObjectInfo(
            key, answer["ContentLength"], answer["LastModified"].timestamp(), answer["ETag"]
        )

    def delete(self, key: str) -> None:
        self._run(f"DELETE {key}", lambda c: c.delete_object(Bucket=self.bucket, Key=key))

    def delete_many(self, keys: list[str]) -> None:
        """Delete objects, 1000 per request (DeleteObjects); absent ones are fine."""
        for i in range(0, len(keys), 1000):
            objects: Any = [{"Key": k} for k in keys[i : i + 1000]]

            def call(c: Boto, objects: Any = objects) -> Awaitable[Any]:
                return c.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )

            answer = self._run("DeleteObjects", call)
            for err in answer.get("Errors", ()):
                if err.get("Code") != "NoSuchKey":
                    raise S3Error(f"S3 delete of {err.get('Key')} failed: {err.get('Code')}")

    def copy(self, src: str, dst: str, *, if_none_match: bool = False) -> None:
        """Server-side copy of a whole object (S3 CopyObject); with ``if_none_match`` an
        existing ``dst`` is kept (S3Error 412)."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        self._run(
            f"copy {src} to {dst}",
            lambda c: c.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}, **extra
            ),
        )

    def list_objects(self, prefix: str, *, delimiter: str = "") -> Iterator[ObjectInfo | str]:
        """Objects under ``prefix`` (ListObjectsV2, every page); with a ``delimiter``, the
        common prefixes come as plain ``str`` among them."""
        token = ""
        while True:
            extra: dict[str, Any] = {"Delimiter": delimiter} if delimiter else {}
            if token:
                extra["ContinuationToken"] = token

            def call(c: Boto, extra: dict[str, Any] = extra) -> Awaitable[Any]:
                return c.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1000, **extra)

            page = self._run(f"listing {prefix}", call)
            for obj in page.get("Contents", ()):
                yield ObjectInfo(
                    obj["Key"], obj["Size"], obj["LastModified"].timestamp(), obj["ETag"]
                )
            for common in page.get("CommonPrefixes", ()):
                yield common["Prefix"]
            token = page.get("NextContinuationToken", "")
            if not page.get("IsTruncated") or not token:
                return

    # -- multipart ---------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        answer = self._run(
            f"multipart start {key}",
            lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key),
        )
        return answer["UploadId"]

    def upload_part_copy(self, key: str, upload_id: str, number: int, src: str) -> str:
        answer = self._run(
            f"part {number} of {key}",
            lambda c: c.upload_part_copy(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": src},
            ),
        )
        return answer["CopyPartResult"]["ETag"]

    def complete_multipart(
        self, key: str, upload_id: str, etags: list[str], *, if_none_match: bool = False
    ) -> None:
        """Assemble the parts; with ``if_none_match`` an existing object is kept (412)."""
        parts: Any = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
        self._run(
            f"multipart completion of {key}",
            lambda c: c.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **extra,
            ),
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._run(
                f"multipart abort of {key}",
                lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
            )

    def list_multipart(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        """``(key, upload_id, initiated)`` of unfinished multipart uploads (first 1000)."""
        answer = self._run(
            f"multipart listing {prefix}",
            lambda c: c.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix),
        )
        for upload in answer.get("Uploads", ()):
            yield upload["Key"], upload["UploadId"], upload["Initiated"].timestamp()
