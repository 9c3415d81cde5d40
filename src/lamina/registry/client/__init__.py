"""lamina's registry client: a Fetcher and Pusher over the OCI Distribution Spec.

The contracts live in ``lamina.image.api``; ``transport`` (retries, error mapping) with
``authflow`` (401 -> token -> retry) and ``credentials`` (docker config.json) carry the
HTTP, over ``lighthttp`` (GET/HEAD to plain-HTTP registries) or aiohttp (``tls`` imports
it, without its CA bundle, on first use); ``remote`` (:class:`RegistryClient`) and
``blob_upload`` speak the distribution API; ``pull`` and ``push`` orchestrate whole
images over the contracts; ``blob_sources`` remembers which repository a blob came from.

The names below are imported on first use (PEP 562), so that ``lamina login``, which
needs only ``credentials``, does not load the HTTP stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.registry.client.blob_sources import BlobSources
    from lamina.registry.client.credentials import (
        Credentials,
        load_credentials,
        normalize_host,
        remove_credentials,
        save_credentials,
    )
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport

__all__ = [
    "BlobSources",
    "Credentials",
    "RegistryClient",
    "Transport",
    "load_credentials",
    "normalize_host",
    "remove_credentials",
    "save_credentials",
]

_HOME = {
    "BlobSources": "blob_sources",
    "Credentials": "credentials",
    "RegistryClient": "remote",
    "Transport": "transport",
    "load_credentials": "credentials",
    "normalize_host": "credentials",
    "remove_credentials": "credentials",
    "save_credentials": "credentials",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
