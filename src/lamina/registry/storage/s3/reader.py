"""Streamed reads of S3 objects that survive dropped connections.

botocore retries a request until its answer starts, not a body cut off halfway. An
:class:`ObjectReader` asks for its range once; if the connection drops mid-body (or the
body ends early) it asks again with ``Range: bytes=<where it stopped>-``, after a
capped exponential backoff, so a long blob read survives a flaky link or a restarted
proxy.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import TracebackType

import aiohttp
from botocore.exceptions import BotoCoreError

from lamina.errors import InvalidArgument, NotFound
from lamina.registry.storage.s3.client import S3Client, S3Error, Stream

# What a body read raises when its connection drops: botocore's ResponseStreamingError,
# IncompleteReadError and read timeouts, or aiohttp's own errors.
_DROPPED = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
RESUMES = 6  # failed reads in a row before giving up


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))


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
        self._stream: Stream | None = None
        self._failures = 0
        stream = self._open(offset, None if length is None else offset + length)
        total = self._total(stream)
        end = total if length is None else offset + length
        if stream is None or offset > total or end > total:
            if stream is not None:
                client.close_body(stream.body)
            if not (stream is None and offset == total and end == total):
                raise InvalidArgument(f"range {offset}+{length} outside {key} of {total} bytes")
        if stream is not None and stream.status == 200 and offset > 0:
            client.close_body(stream.body)
            raise S3Error(f"S3 ignored the Range of GET {key}")
        self._end = end
        self.size = total
        self._stream = stream

    def _open(self, start: int, end: int | None) -> Stream | None:
        if end is not None and end <= start:
            end = start + 1  # probe one byte for the size; S3 ranges cannot be empty
        return self._client.get_stream(self._key, start, end)

    def _total(self, stream: Stream | None) -> int:
        if stream is not None:
            return stream.total
        info = self._client.head(self._key)  # at or past the end: sized by a HEAD
        if info is None:
            raise NotFound(f"S3 object {self._key} not found")
        return info.size

    def read(self, size: int = -1, /) -> bytes:
        want = self._end - self._pos
        if want <= 0:
            self.close()
            return b""
        if size >= 0:
            want = min(want, size)
        while True:
            try:
                if self._stream is None:
                    self._stream = self._open(self._pos, self._end)
                    if self._stream is None:
                        raise S3Error(f"S3 object {self._key} shrank while being read")
                    if self._stream.status == 200 and self._pos > 0:
                        self._drop()
                        raise S3Error(f"S3 ignored the Range of GET {self._key}")
                data = self._client.read_body(self._stream.body, want)
                if not data:
                    raise OSError(f"S3 body of {self._key} ended early")
            except _DROPPED as exc:
                # The connection dropped mid-body: resume from the byte we are at.
                self._drop()
                self._failures += 1
                if self._failures >= RESUMES:
                    raise S3Error(f"S3 read of {self._key} kept failing: {exc!r}") from exc
                _backoff(self._failures)
                continue
            self._pos += len(data)
            self._failures = 0  # progress: only failures in a row give up
            return data

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._client.close_body(stream.body)

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
