"""What a mirror forwards each way, and the ``Range`` of a blob GET (pure).

RFC 9110 section 7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding`` and ``Upgrade`` are for one
hop only. ``Host`` is set for the upstream (registries answer 403 or route wrongly
on the mirror's), and ``Content-Length`` is left to the HTTP library, which frames
the body it sends itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def _named_by_connection(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for key, value in headers:
        if key.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def request_headers(
    headers: Iterable[tuple[str, str]], *, drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The client's request headers to send upstream (repeated headers kept)."""
    items = list(headers)
    skip = _REQUEST_DROP | _named_by_connection(items) | {d.lower() for d in drop}
    return [(k, v) for k, v in items if k.lower() not in skip]


def response_headers(
    headers: Iterable[tuple[str, str]], *, keep_length: bool = False
) -> list[tuple[str, str]]:
    """The upstream's answer headers to send the client. ``keep_length`` for answers
    without a body we stream (HEAD), whose length is the upstream's to say."""
    items = list(headers)
    skip = (HOP_BY_HOP if keep_length else _RESPONSE_DROP) | _named_by_connection(items)
    return [(k, v) for k, v in items if k.lower() not in skip]


def credential(headers: Mapping[str, str]) -> str:
    return headers.get("Authorization", "")


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class BadRange(ValueError):
    """A Range this blob cannot satisfy (416)."""


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single-range ``Range`` header (RFC 9110 section 14.1.2);
    ``None`` for no header or one we ignore (several ranges, another unit: answered
    with the whole blob, which RFC 9110 allows). :class:`BadRange` when unsatisfiable."""
    if value is None:
        return None
    m = _RANGE.match(value)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        raise BadRange(value)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise BadRange(value)
        return max(size - n, 0), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size or (last and int(last) < start):
        raise BadRange(value)
    return start, end
