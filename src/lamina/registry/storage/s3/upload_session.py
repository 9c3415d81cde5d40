"""The S3 driver's upload session: the record kept in ``_uploads/<uuid>/state`` and the
chunk iterator its appends read the data with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lamina.errors import InvalidArgument
from lamina.registry.storage.api import CHUNK, Readable, UploadData


@dataclass(frozen=True, slots=True)
class UploadState:
    """An upload session as stored in ``_uploads/<uuid>/state`` (see :mod:`.driver`)."""

    name: str
    started: float
    size: int
    segments: tuple[tuple[str, int], ...]
    pending: tuple[tuple[str, int], ...]
    sha256: str | None  # of bytes [0, size) when one process hashed them all

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "started": self.started,
                "size": self.size,
                "segments": self.segments,
                "pending": self.pending,
                "sha256": self.sha256,
            }
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> UploadState:
        try:
            obj: Any = json.loads(data)
            return cls(
                str(obj["name"]),
                float(obj["started"]),
                int(obj["size"]),
                tuple((str(k), int(n)) for k, n in obj["segments"]),
                tuple((str(k), int(n)) for k, n in obj["pending"]),
                None if obj["sha256"] is None else str(obj["sha256"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument("damaged upload state") from exc


def iter_data(data: UploadData) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(data, Readable):
        while chunk := data.read(CHUNK):
            yield chunk
    else:
        yield from data
