"""Registry storage drivers behind one Protocol (:mod:`.api`); the filesystem driver is
the default. ``open_storage`` turns a ``--storage`` argument into a driver."""

from __future__ import annotations

from lamina.errors import Unsupported
from lamina.registry.storage.api import BlobReader, RegistryStorage, UploadData, UploadInfo
from lamina.registry.storage.filesystem import FilesystemStorage

__all__ = [
    "BlobReader",
    "FilesystemStorage",
    "RegistryStorage",
    "UploadData",
    "UploadInfo",
    "open_storage",
]


def open_storage(location: str) -> RegistryStorage:
    """A driver for ``location``: a directory path (or ``file://`` URL) today."""
    if location.startswith("s3://"):
        raise Unsupported(
            "the S3 registry storage driver is not available yet",
            hint="use a directory for --storage",
        )
    return FilesystemStorage(location.removeprefix("file://"))
