"""lamina's registry client: a Fetcher and Pusher over the OCI Distribution Spec.

The contracts live in ``lamina.image.api``; ``transport`` (retries, error mapping) with
``authflow`` (401 -> token -> retry) and ``credentials`` (docker config.json) carry the
HTTP, over ``lighthttp`` (GET/HEAD to plain-HTTP registries) or aiohttp (set up by
``lamina.http``, shared with ``ADD <url>``, and imported on first use); ``remote`` and
``blob_upload`` speak the distribution API. The client is only a transport: which blobs a
pull or push moves, and in which order, is ``lamina.image.transfer``'s business.

The names below are imported on first use (PEP 562), so that ``lamina login``, which
needs only ``credentials``, does not load the HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
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
    "Credentials",
    "RegistryClient",
    "Transport",
    "load_credentials",
    "normalize_host",
    "remove_credentials",
    "save_credentials",
]

_HOME = {
    "Credentials": "credentials",
    "RegistryClient": "remote",
    "Transport": "transport",
    "load_credentials": "credentials",
    "normalize_host": "credentials",
    "remove_credentials": "credentials",
    "save_credentials": "credentials",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
