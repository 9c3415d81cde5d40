"""The aiohttp ``ClientSession`` every lamina client uses.

- ``auto_decompress=False``: bytes arrive as sent, so a digest or checksum covers what
  the server holds (a registry's blob, an ``ADD`` file), never a decoded copy; and
  ``Accept-Encoding: identity`` (RFC 9110 section 12.5.3) so no server encodes them.
- No total timeout (a large blob takes as long as it takes); a timeout per connect
  and per socket read instead, so a stalled peer fails.
- A read buffer of a few MiB: aiohttp's default 64 KiB buffer pauses the socket every
  128 KiB, and a large body then arrives in tiny bursts.
- The default SSL contexts are never used (see :mod:`lamina.http.tls`): callers pass
  :func:`~lamina.http.tls.verified_context` or ``False`` per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

USER_AGENT = "lamina"
READ_BUFFER = 2 << 20


def new_session(
    *,
    connections: int = 16,
    connect_timeout: float = 30,
    read_timeout: float = 120,
    read_bufsize: int = READ_BUFFER,
) -> aiohttp.ClientSession:
    """A session with lamina's defaults (see the module docstring); imports aiohttp.
    Must be called on the running event loop, and closed by the caller."""
    from lamina.http.tls import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        ),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        read_bufsize=read_bufsize,
    )
