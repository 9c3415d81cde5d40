"""The S3 registry storage driver (:mod:`.driver`) on aiobotocore, and what it stands on:
the blocking calls it makes (:mod:`.client`), resuming object reads (:mod:`.reader`)
and the upload session record (:mod:`.upload_session`)."""

from __future__ import annotations

from lamina.registry.storage.s3.client import Credentials, S3Client, S3Error
from lamina.registry.storage.s3.driver import S3Storage

__all__ = ["Credentials", "S3Client", "S3Error", "S3Storage"]
