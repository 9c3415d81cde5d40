"""A small blocking S3 client on :mod:`http.client`: just what the registry driver needs.

Path-style requests (``/bucket/key``) signed with SigV4 (:mod:`.sign`); a pool of
keep-alive connections shared by threads (a connection is owned by one request or one
reader at a time); retries with exponential backoff on 5xx/429 answers and on dropped
or refused connections, re-sending bodies from bytes or from a seekable file. Object
reads are streamed, and a reader that loses its connection mid-body resumes with a
``Range`` GET from where it stopped. Nothing here buffers an object whole except the
small XML answers, which are capped.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import IO
from urllib.parse import quote, urlsplit

from lamina.errors import InvalidArgument, LaminaError, NotFound
from lamina.registry.storage.api import CHUNK
from lamina.registry.storage.s3.sign import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    canonical_query,
    sign,
)

RETRIES = 6  # attempts per request; the backoff sums to about 6 s
XML_MAX = 16 << 20  # cap on an XML answer (a listing page is ~300 KiB)
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT = (OSError, http.client.HTTPException)
# 403 codes that mean the credentials, not the permissions, are wrong.
_AUTH_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed"}
)


class S3Error(LaminaError):
    """An S3 request that failed: ``status`` (0 if no answer) and the S3 error ``code``."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch
    etag: str = ""


@dataclass(frozen=True, slots=True)
class FileBody:
    """``length`` bytes of a seekable file from ``offset``: re-readable on a retry."""

    file: IO[bytes]
    offset: int
    length: int


Body = bytes | FileBody | None


class _Slice:
    """Feeds http.client a FileBody in CHUNK reads."""

    def __init__(self, body: FileBody) -> None:
        body.file.seek(body.offset)
        self._f = body.file
        self._left = body.length

    def read(self, size: int = -1) -> bytes:
        n = self._left if size < 0 else min(size, self._left)
        data = self._f.read(n) if n > 0 else b""
        self._left -= len(data)
        return data


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # S3 answers in the 2006-03-01 namespace


def _child_text(el: ET.Element, name: str) -> str:
    for child in el:
        if _local(child.tag) == name:
            return child.text or ""
    return ""


def _parse_xml(data: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise S3Error(f"S3 sent an unreadable answer to {what}: {exc}") from exc


def _error_of(status: int, data: bytes, what: str) -> S3Error:
    code = message = ""
    if data.lstrip().startswith(b"<"):
        with contextlib.suppress(S3Error):
            root = _parse_xml(data, what)
            code, message = _child_text(root, "Code"), _child_text(root, "Message")
    text = f"S3 {what} failed: {status or 'no answer'} {code} {message}".rstrip()
    hint = None
    if status == 403 and code in _AUTH_CODES:
        hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the URL's keys) and region"
    elif status == 403:
        hint = "check the S3 credentials, and that their identity may use this bucket"
    elif code == "NoSuchBucket":
        hint = "create the bucket first"
    return S3Error(text, status=status, code=code, hint=hint)


class Response:
    """A response whose body is still on the wire; read it, then :meth:`close`."""

    def __init__(
        self, client: S3Client, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
    ) -> None:
        self._client = client
        self._conn: http.client.HTTPConnection | None = conn
        self.resp = resp
        self.status: int = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}

    def read(self, size: int = -1) -> bytes:
        return bytes(self.resp.read(size if size >= 0 else None))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if (
            self.resp.isclosed() and not self.resp.will_close
        ):  # fully read: the connection can serve the next request
            self._client._release(conn)
        else:
            conn.close()

    def abort(self) -> None:
        """Close without reusing the connection (a body cut short or unwanted)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


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
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._netloc = parts.netloc
        self._timeout = timeout
        self._retries = max(1, retries)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout, blocksize=CHUNK)

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < 64:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests ------------------------------------------------------------------------
    def path(self, key: str = "") -> str:
        return f"/{self.bucket}/{key}" if key else f"/{self.bucket}"

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        key: str,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Body,
        payload: str,
    ) -> http.client.HTTPResponse:
        path = self.path(key)
        hdrs = {"host": self._netloc, **{k.lower(): v for k, v in headers.items()}}
        length = 0 if body is None else len(body) if isinstance(body, bytes) else body.length
        if body is not None or method in ("PUT", "POST"):
            hdrs["content-length"] = str(length)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        hdrs.update(
            sign(
                self._creds,
                method=method,
                path=path,
                query=query,
                headers=hdrs,
                payload_sha256=payload,
                amz_date=amz_date,
                region=self.region,
            )
        )
        url = quote(path, safe="/~")
        if query:
            url += "?" + canonical_query(query)
        data = _Slice(body) if isinstance(body, FileBody) else body
        conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        for name, value in hdrs.items():
            conn.putheader(name, value)
        conn.endheaders()
        if isinstance(data, bytes):
            conn.send(data)
        elif data is not None:
            while block := data.read(CHUNK):
                conn.send(block)
        return conn.getresponse()

    def request(
        self,
        method: str,
        key: str = "",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        payload_sha256: str | None = None,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> Response:
        """Send one request, retrying transient failures; the answer's status is in
        ``ok`` (else S3Error; 404 NoSuchKey as NotFound). ``payload_sha256`` signs the
        body's hash; bytes bodies are hashed here, files go unsigned unless given."""
        what = what or f"{method} {key or self.bucket}"
        query = dict(query or {})
        headers = dict(headers or {})
        if payload_sha256 is None:
            if body is None:
                payload_sha256 = EMPTY_SHA256
            elif isinstance(body, bytes):
                payload_sha256 = hashlib.sha256(body).hexdigest()
            else:
                payload_sha256 = UNSIGNED_PAYLOAD
        last: S3Error | None = None
        attempt = 0
        while attempt < self._retries:
            conn, reused = self._acquire()
            try:
                resp = self._send(
                    conn,
                    method,
                    key,
                    query=query,
                    headers=headers,
                    body=body,
                    payload=payload_sha256,
                )
            except _TRANSIENT as exc:
                conn.close()
                last = S3Error(f"S3 {what} failed: {exc!r}", hint=f"is {self.endpoint} up?")
                last.__cause__ = exc
                if reused:
                    continue  # a keep-alive connection the server had closed: retry at once
                attempt += 1
                self._backoff(attempt)
                continue
            answer = Response(self, conn, resp)
            if resp.status in ok:
                return answer
            try:
                data = answer.read(XML_MAX)
            except _TRANSIENT:
                data = b""
            answer.close()
            err = _error_of(resp.status, data, what)
            if resp.status == 404 and err.code in ("NoSuchKey", "NoSuchUpload", ""):
                raise NotFound(err.message) from err
            if resp.status not in _RETRY_STATUS:
                raise err
            last = err
            attempt += 1
            self._backoff(attempt)
        assert last is not None
        raise last

    def _backoff(self, attempt: int) -> None:
        if attempt < self._retries:
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))

    def _xml(self, method: str, key: str = "", **kw: object) -> ET.Element:
        answer = self.request(method, key, **kw)  # type: ignore[arg-type]
        try:
            data = answer.read(XML_MAX)
        except _TRANSIENT as exc:
            raise S3Error(f"S3 {method} {key} answer was cut: {exc!r}") from exc
        finally:
            answer.close()
        root = _parse_xml(data, f"{method} {key}")
        # CompleteMultipartUpload and copies may answer 200 with an error body.
        if _local(root.tag) == "Error":
            raise _error_of(200, data, f"{method} {key}")
        return root

    def _empty(self, method: str, key: str = "", **kw: object) -> dict[str, str]:
        answer = self.request(method, key, **kw)  # type: ignore[arg-type]
        try:
            answer.read()
        except _TRANSIENT:
            answer.abort()
        answer.close()
        return answer.headers

    # -- operations ------------------------------------------------------------------------
    def create_bucket(self) -> None:
        try:
            self._empty("PUT", what=f"create bucket {self.bucket}")
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(
        self,
        key: str,
        body: Body,
        *,
        payload_sha256: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Store an object (replacing it, unless ``headers`` hold a condition such as
        ``If-None-Match: *``, then S3Error 412); returns its ETag."""
        answer = self._empty(
            "PUT", key, body=body, payload_sha256=payload_sha256, headers=headers or {}
        )
        return answer.get("etag", "")

    def get_bytes(self, key: str, limit: int) -> bytes:
        """A small object whole; InvalidArgument if it is larger than ``limit``."""
        answer = self.request("GET", key)
        try:
            size = int(answer.headers.get("content-length", "0"))
            if size > limit:
                raise InvalidArgument(f"S3 object {key} is {size} bytes, over {limit}")
            return answer.read()
        except _TRANSIENT as exc:
            raise S3Error(f"S3 GET {key} was cut: {exc!r}") from exc
        finally:
            answer.close()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            headers = self._empty("HEAD", key)
        except NotFound:
            return None
        return ObjectInfo(
            key,
            int(headers.get("content-length", "0")),
            _http_time(headers.get("last-modified", "")),
            headers.get("etag", ""),
        )

    def delete(self, key: str) -> None:
        self._empty("DELETE", key, ok=(200, 204))

    def delete_many(self, keys: list[str]) -> None:
        """Delete objects, 1000 per request (DeleteObjects); absent ones are fine."""
        for i in range(0, len(keys), 1000):
            root = ET.Element("Delete")
            ET.SubElement(root, "Quiet").text = "true"
            for key in keys[i : i + 1000]:
                ET.SubElement(ET.SubElement(root, "Object"), "Key").text = key
            body = ET.tostring(root, encoding="utf-8")
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            answer = self._xml(
                "POST", query={"delete": ""}, body=body, headers={"content-md5": md5}
            )
            for el in answer:
                if _local(el.tag) == "Error" and _child_text(el, "Code") != "NoSuchKey":
                    raise S3Error(
                        f"S3 delete of {_child_text(el, 'Key')} failed: {_child_text(el, 'Code')}"
                    )

    def copy(self, src: str, dst: str, *, if_none_match: bool = False) -> None:
        """Server-side copy of a whole object (S3 CopyObject); with ``if_none_match`` an
        existing ``dst`` is kept (S3Error 412)."""
        headers = {"x-amz-copy-source": quote(self.path(src), safe="/~")}
        if if_none_match:
            headers["if-none-match"] = "*"
        self._xml("PUT", dst, headers=headers)

    def list_objects(self, prefix: str, *, delimiter: str = "") -> Iterator[ObjectInfo | str]:
        """Objects under ``prefix`` (ListObjectsV2, every page); with a ``delimiter``, the
        common prefixes come as plain ``str`` among them."""
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            root = self._xml("GET", query=query)
            for el in root:
                tag = _local(el.tag)
                if tag == "Contents":
                    yield ObjectInfo(
                        _child_text(el, "Key"),
                        int(_child_text(el, "Size") or 0),
                        _iso_time(_child_text(el, "LastModified")),
                        _child_text(el, "ETag"),
                    )
                elif tag == "CommonPrefixes":
                    yield _child_text(el, "Prefix")
            token = _child_text(root, "NextContinuationToken")
            if _child_text(root, "IsTruncated") != "true" or not token:
                return

    # -- multipart ---------------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        root = self._xml("POST", key, query={"uploads": ""})
        upload_id = _child_text(root, "UploadId")
        if not upload_id:
            raise S3Error(f"S3 gave no UploadId for {key}")
        return upload_id

    def upload_part_copy(self, key: str, upload_id: str, number: int, src: str) -> str:
        root = self._xml(
            "PUT",
            key,
            query={"partNumber": str(number), "uploadId": upload_id},
            headers={"x-amz-copy-source": quote(self.path(src), safe="/~")},
        )
        return _child_text(root, "ETag")

    def complete_multipart(
        self, key: str, upload_id: str, etags: list[str], *, if_none_match: bool = False
    ) -> None:
        """Assemble the parts; with ``if_none_match`` an existing object is kept (412)."""
        root = ET.Element("CompleteMultipartUpload")
        for number, etag in enumerate(etags, 1):
            part = ET.SubElement(root, "Part")
            ET.SubElement(part, "PartNumber").text = str(number)
            ET.SubElement(part, "ETag").text = etag
        body = ET.tostring(root, encoding="utf-8")
        headers = {"if-none-match": "*"} if if_none_match else {}
        self._xml("POST", key, query={"uploadId": upload_id}, body=body, headers=headers)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._empty("DELETE", key, query={"uploadId": upload_id}, ok=(200, 204))

    def list_multipart(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        """``(key, upload_id, initiated)`` of unfinished multipart uploads (first 1000)."""
        root = self._xml("GET", query={"uploads": "", "prefix": prefix})
        for el in root:
            if _local(el.tag) == "Upload":
                yield (
                    _child_text(el, "Key"),
                    _child_text(el, "UploadId"),
                    _iso_time(_child_text(el, "Initiated")),
                )


def _iso_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _http_time(text: str) -> float:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0
