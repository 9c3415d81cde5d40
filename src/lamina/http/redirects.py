"""Redirects, followed by lamina's clients themselves: where to, how many, with what.

RFC 9110 section 15.4: a 301, 302, 303, 307 or 308 answer names the next URL in
``Location`` (relative to the one asked). A 303 is fetched with GET (a HEAD stays a
HEAD), and so is a 301 or 302 to a POST (what every browser and curl do); a 307 or 308
repeats the method and the body.

At most :data:`MAX_REDIRECTS` (10, as aiohttp, curl's and Go's net/http default) are
followed; one more is a :class:`~lamina.errors.ToolError` naming the URL and the count
(a redirect loop, or a chain no real server needs).

Credentials belong to an origin (RFC 6454: scheme, host and port). The registry client
sends them only where :func:`same_origin` says the request stays on the origin they
were given for: a redirect or upload ``Location`` on another origin (an S3 bucket, a
CDN) gets the request without them, and so does the same host over another scheme
(``https`` -> ``http`` would expose them on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from lamina.errors import ToolError

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


@dataclass(frozen=True, slots=True)
class Hop:
    """The request a redirect asks for next."""

    method: str
    url: str
    keep_body: bool


def next_hop(method: str, url: str, status: int, location: str | None) -> Hop:
    """Where the redirect ``status`` to ``method url`` goes (see the module docstring)."""
    if not location:
        raise ToolError(
            f"{method} {url} answered {status} (a redirect) without a Location header",
            hint="the server is misconfigured",
        )
    target = urljoin(url, location.strip())
    if urlsplit(target).scheme.lower() not in _DEFAULT_PORTS:
        raise ToolError(
            f"{method} {url} redirects to {target!r}, which is not an http(s) URL",
            hint="the server is misconfigured",
        )
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return Hop("GET", target, keep_body=False)
    return Hop(method, target, keep_body=True)


def too_many_redirects(method: str, url: str, failed: str = "") -> ToolError:
    """``failed`` goes before the reason (``ADD``'s "cannot download: ")."""
    return ToolError(
        f"{method} {url}: {failed}more than {MAX_REDIRECTS} redirects (a redirect loop?)",
        hint="the server (or a proxy in front of it) is misconfigured; try the final URL directly",
    )
