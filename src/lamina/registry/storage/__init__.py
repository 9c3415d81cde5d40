"""Registry storage drivers behind one Protocol (:mod:`.api`); the filesystem driver is
the default. ``open_storage`` turns a ``--storage`` argument into a driver."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from lamina.errors import InvalidArgument
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

_S3_OPTIONS = frozenset({"endpoint", "region", "access_key", "secret_key", "session_token"})


def open_storage(location: str) -> RegistryStorage:
    """A driver for ``location``:

    - a directory path, or a ``file://`` URL: :class:`FilesystemStorage`;
    - ``s3://BUCKET[/PREFIX][?endpoint=URL&region=R]``: the S3 driver on an existing
      bucket, checked now (S3Error if it is missing or the credentials are refused).
      ``endpoint`` defaults to AWS (``https://s3.REGION.amazonaws.com``), ``region`` to
      ``$AWS_REGION`` or us-east-1. Credentials come from ``AWS_ACCESS_KEY_ID`` /
      ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), or from the query's
      ``access_key`` / ``secret_key`` (/ ``session_token``), which win; prefer the
      environment, since a URL shows in process listings.
    """
    if location.startswith("s3://"):
        return _open_s3(location)
    return FilesystemStorage(location.removeprefix("file://"))


def _open_s3(location: str) -> RegistryStorage:
    # Imported here: the filesystem default needs none of the HTTP machinery.
    from lamina.registry.storage.s3.client import Credentials, S3Client
    from lamina.registry.storage.s3.driver import S3Storage

    parts = urlsplit(location)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _S3_OPTIONS)
    if unknown or not parts.hostname:
        raise InvalidArgument(
            f"invalid S3 storage location {location.split('?', maxsplit=1)[0]!r}"
            + (f" (unknown option {unknown[0]!r})" if unknown else ""),
            hint="use s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=REGION",
        )
    region = query.get("region") or os.environ.get("AWS_REGION") or "us-east-1"
    endpoint = query.get("endpoint") or f"https://s3.{region}.amazonaws.com"
    access_key = query.get("access_key") or os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = query.get("secret_key") or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    token = query.get("session_token") or os.environ.get("AWS_SESSION_TOKEN") or None
    if not access_key or not secret_key:
        raise InvalidArgument(
            "no S3 credentials",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    # The bucket is the URL's host part, as written (bucket names are lowercase anyway).
    bucket = parts.netloc.rsplit("@", 1)[-1]
    client = S3Client(endpoint, bucket, Credentials(access_key, secret_key, token), region=region)
    storage = S3Storage(client, parts.path)
    storage.check()  # a wrong key or a missing bucket is reported at startup, clearly
    return storage
