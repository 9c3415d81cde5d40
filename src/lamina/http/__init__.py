"""lamina's HTTP client pieces, shared by the registry client and ``ADD <url>``.

Both speak HTTP through aiohttp, set up the same way here: ``tls`` imports aiohttp
without its import-time CA loading and makes the one verified TLS context; ``session``
makes a ``ClientSession`` with lamina's defaults (bytes as sent, timeouts per socket
operation, a large read buffer); ``retry`` holds which failures are worth another try
and the backoff between tries; ``errors`` tells kinds of network failure apart and
turns them into :mod:`lamina.errors`; ``redirects`` follows redirects (at most 10) and
says which origin a URL is on (credentials stay on theirs). Protocol rules of one use
(the distribution spec's error bodies, ADD's file naming) stay with that use.

aiohttp is imported only when a session is made (or ``lamina.http.tls`` is imported):
importing this package costs nothing.
"""

from lamina.http.errors import (
    certificate_error,
    is_certificate_error,
    is_dns_error,
    network_error,
    network_errors,
)
from lamina.http.redirects import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    next_hop,
    same_origin,
    too_many_redirects,
)
from lamina.http.retry import RETRY_STATUSES, Backoff
from lamina.http.session import READ_BUFFER, USER_AGENT, new_session

__all__ = [
    "MAX_REDIRECTS",
    "READ_BUFFER",
    "REDIRECT_STATUSES",
    "RETRY_STATUSES",
    "USER_AGENT",
    "Backoff",
    "certificate_error",
    "is_certificate_error",
    "is_dns_error",
    "network_error",
    "network_errors",
    "new_session",
    "next_hop",
    "same_origin",
    "too_many_redirects",
]
