"""The content store: blobs by digest, refs by name (contracts in :mod:`lamina.store.api`).

The names below are imported on first use (PEP 562), so that importing one submodule,
such as :mod:`lamina.store.local` for ``default_root``, does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.store.api import (
        MAX_METADATA_BYTES,
        BlobInfo,
        BlobWriter,
        GCPlan,
        GCResult,
        GCRoots,
        Store,
    )
    from lamina.store.local import LocalStore, default_root

__all__ = [
    "MAX_METADATA_BYTES",
    "BlobInfo",
    "BlobWriter",
    "GCPlan",
    "GCResult",
    "GCRoots",
    "LocalStore",
    "Store",
    "default_root",
]

_HOME = {
    "MAX_METADATA_BYTES": "api",
    "BlobInfo": "api",
    "BlobWriter": "api",
    "GCPlan": "api",
    "GCResult": "api",
    "GCRoots": "api",
    "Store": "api",
    "LocalStore": "local",
    "default_root": "local",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
