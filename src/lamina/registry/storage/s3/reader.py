"""Streamed reads of S3 objects that survive dropped connections.

An :class:`ObjectReader` asks for its range once; if the connection drops mid-body (or
the body ends early) it asks again with ``Range: bytes=<where it stopped>-``, with the
client's backoff, so a long blob read survives a flaky link or a restarted proxy.
"""

from __future__ import annotations

import http.client
from types import TracebackType

from lamina.errors import InvalidArgument, NotFound
from lamina.registry.storage.s3.client import Response, S3Client, S3Error

_TRANSIENT = (OSError, http.client.HTTPException)


class ObjectReader:
    """Reads a range of an object, resuming with a Range GET if the connection drops."""

    def __init__(
        self, client: S3Client, key: str, offset: int = 0, length: int | None = None
    ) -> None:
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument(f"invalid range {offset}+{length} of {key}")
        self._client = client
        self._key = key
        self._pos = offset
        self._answer: Response | None = None
        self._failures = 0
        answer = self._open(offset, None if length is None else offset + length)
        total = self._total(answer)
        end = total if length is None else offset + length
        if answer is None or offset > total or end > total:
            if answer is not None:
                answer.close()
            if not (answer is None and offset == total and end == total):
                raise InvalidArgument(f"range {offset}+{length} outside {key} of {total} bytes")
        if answer is not None and answer.status == 200 and offset > 0:
            answer.close()
            raise S3Error(f"S3 ignored the Range of GET {key}")
        self._end = end
        self.size = total
        self._answer = answer

    def _open(self, start: int, end: int | None) -> Response | None:
        if end is not None and end <= start:
            end = start + 1  # probe one byte for the size; S3 ranges cannot be empty
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            return self._client.request(
                "GET", self._key, headers={"range": rng}, ok=(200, 206), what=f"GET {self._key}"
            )
        except S3Error as exc:
            if exc.status == 416:
                return None  # offset at or past the end: sized by a HEAD below
            raise

    def _total(self, answer: Response | None) -> int:
        if answer is None:
            info = self._client.head(self._key)
            if info is None:
                raise NotFound(f"S3 object {self._key} not found")
            return info.size
        if answer.status == 200:
            return int(answer.headers.get("content-length", "0"))
        content_range = answer.headers.get("content-range", "")
        try:
            return int(content_range.rsplit("/", 1)[1])
        except (IndexError, ValueError) as exc:
            answer.close()
            raise S3Error(f"S3 GET {self._key}: bad Content-Range {content_range!r}") from exc

    def read(self, size: int = -1, /) -> bytes:
        want = self._end - self._pos
        if want <= 0:
            self.close()
            return b""
        if size >= 0:
            want = min(want, size)
        while True:
            try:
                if self._answer is None:
                    self._answer = self._open(self._pos, self._end)
                    if self._answer is None:
                        raise S3Error(f"S3 object {self._key} shrank while being read")
                    if self._answer.status == 200 and self._pos > 0:
                        self._drop()
                        raise S3Error(f"S3 ignored the Range of GET {self._key}")
                data = self._answer.read(want)
                if not data:
                    raise http.client.IncompleteRead(b"", want)
            except _TRANSIENT as exc:
                # The connection dropped mid-body: resume from the byte we are at.
                self._drop()
                self._failures += 1
                if self._failures >= self._client._retries:
                    raise S3Error(f"S3 read of {self._key} kept failing: {exc!r}") from exc
                self._client._backoff(self._failures)
                continue
            self._pos += len(data)
            self._failures = 0  # progress: only failures in a row give up
            return data

    def _drop(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None:
            answer.abort()

    def close(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None:
            answer.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
