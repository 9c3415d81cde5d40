"""Kinds of network failure, and the lamina errors they become.

A dropped or stalled connection is worth another try; a name that does not resolve or
a certificate this host does not trust is not (the same answer comes back). Each
becomes a :class:`~lamina.errors.ToolError` naming what failed, with a hint the caller
may replace. aiohttp's exception types are looked at only once aiohttp is imported.
"""

from __future__ import annotations

import sys

from lamina.errors import ToolError

# What a dropped or stalled connection raises without aiohttp (the registry client's
# lighthttp raises ConnectionErrors; asyncio.timeout raises TimeoutError).
_BUILTIN_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def network_errors() -> tuple[type[BaseException], ...]:
    """What a dropped or stalled connection raises (for ``except``): aiohttp's kinds
    too once aiohttp is in use (an except clause evaluates this only when needed)."""
    if "aiohttp" not in sys.modules:
        return _BUILTIN_ERRORS
    from lamina.http.tls import aiohttp

    return (*_BUILTIN_ERRORS, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


def is_dns_error(exc: BaseException) -> bool:
    """Whether aiohttp could not resolve the host name."""
    if "aiohttp" not in sys.modules:
        return False
    from lamina.http.tls import aiohttp

    return isinstance(exc, aiohttp.ClientConnectorDNSError)


def is_certificate_error(exc: BaseException) -> bool:
    """Whether the server's certificate failed verification."""
    if "aiohttp" not in sys.modules:
        return False
    from lamina.http.tls import aiohttp

    return isinstance(exc, aiohttp.ClientConnectorCertificateError)


def network_error(
    method: str,
    url: str,
    exc: BaseException,
    *,
    hint: str = "check that the server is up and reachable",
) -> ToolError:
    """``method url`` failed on the network, after whatever retries were made."""
    reason = str(exc) or type(exc).__name__
    return ToolError(f"{method} {url} failed after retries: {reason}", hint=hint)


def certificate_error(
    host: str,
    exc: BaseException,
    *,
    hint: str = "add its CA to the system trust store (or SSL_CERT_FILE)",
) -> ToolError:
    """``host`` presented a certificate this host does not trust (never retried)."""
    reason = getattr(exc, "certificate_error", exc)
    return ToolError(
        f"{host} presented a certificate this host does not trust: {reason}", hint=hint
    )
