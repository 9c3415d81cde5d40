"""The content store: blobs by digest, refs by name (contracts in :mod:`lamina.store.api`)."""

from __future__ import annotations

from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, BlobWriter, GCResult, Store
from lamina.store.local import LocalStore, default_root

__all__ = [
    "MAX_METADATA_BYTES",
    "BlobInfo",
    "BlobWriter",
    "GCResult",
    "LocalStore",
    "Store",
    "default_root",
]
