"""The S3 registry storage driver (:mod:`.driver`) and what it stands on: SigV4 signing
(:mod:`.sign`, pure), a small blocking client on ``http.client`` (:mod:`.client`),
resuming object reads (:mod:`.reader`) and the upload session record (:mod:`.uploads`).
No third-party dependency."""

from __future__ import annotations

from lamina.registry.storage.s3.client import S3Client, S3Error
from lamina.registry.storage.s3.driver import S3Storage
from lamina.registry.storage.s3.sign import Credentials

__all__ = ["Credentials", "S3Client", "S3Error", "S3Storage"]
