"""HTTP ``Range`` for blob GET (RFC 9110 section 14; distribution-spec "Pulling blobs").

One range only: a multi-range request is answered with the whole blob, which RFC 9110
section 14.2 allows (a server MAY ignore Range). A Range that does not parse (another
unit, no digits) is ignored too. One that parses but selects nothing is a 416 with
``Content-Range: bytes */<size>``: a first byte at or past the end, a zero-length
suffix, and a last byte before the first (``bytes=500-0``; RFC 9110 calls that
invalid, and the distribution-spec conformance suite, like distribution itself, wants
416 rather than the whole blob, so a client never mistakes it for a 200 of its range).
"""

from __future__ import annotations

import re

from lamina.registry.errors import RegistryError

_RANGE_RE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.I)
_MAX_DIGITS = 19  # int64


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` to serve, or None to serve everything (no header,
    an unparsable one, several ranges). Raises RegistryError 416 when unsatisfiable."""
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header)
    if m is None:
        return None
    first, last = m[1], m[2]
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS or not (first or last):
        return None
    if not first:
        # suffix-range "bytes=-n": the last n bytes; n == 0 selects nothing.
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        raise unsatisfiable(size)
    if start >= size:
        raise unsatisfiable(size)
    return start, min(end, size - 1)


def unsatisfiable(size: int) -> RegistryError:
    return RegistryError(
        "RANGE_NOT_SATISFIABLE",
        f"range not satisfiable for a blob of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` of a 206 answer."""
    return f"bytes {start}-{end}/{size}"
