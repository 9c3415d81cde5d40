"""aiohttp, imported without its import-time CA loading, and the clients' TLS context.

aiohttp builds two default SSL contexts when ``aiohttp.connector`` is imported, each
loading the whole system CA bundle (~0.1 s, a sixth of a ``lamina pull`` of a small
image). lamina's clients never use them: every request passes either ``False`` (an
insecure registry: no verification, as docker's insecure-registry rule) or the context from
:func:`verified_context`, made here on first use from the system's trust store (and the
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` the user set). So aiohttp is imported with those
variables pointing where no file can be (under ``/dev/null``), then they are put back.
The defaults aiohttp keeps are then empty, so code that forgot to pass a context fails
closed (every certificate is refused) rather than trusting anything.

Every HTTP client of lamina (the registry client, ``ADD <url>``) imports aiohttp from
here (``from lamina.http.tls import aiohttp``).
"""

from __future__ import annotations

import os
import ssl
import sys
from functools import cache

_CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")
_NOWHERE = os.path.join(os.devnull, "no-ca")  # /dev/null is no directory: never a file


def _import_without_ca_bundle() -> None:
    if "aiohttp.connector" in sys.modules:
        return  # imported already (by the registry server, a test): nothing to save
    saved = {name: os.environ.get(name) for name in _CA_VARIABLES}
    try:
        for name in _CA_VARIABLES:
            os.environ[name] = _NOWHERE
        import aiohttp.connector  # noqa: F401  (builds its default contexts now)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_import_without_ca_bundle()

import aiohttp  # noqa: E402  (after the CA variables are back)

__all__ = ["aiohttp", "verified_context"]


@cache
def verified_context() -> ssl.SSLContext:
    """The context for every verified ``https`` server (registries, token servers,
    ``ADD`` URLs): the system trust store, hostname checking, TLS 1.2 or later
    (RFC 9325), HTTP/1.1."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context
