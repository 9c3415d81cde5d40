"""Go durations, as HEALTHCHECK's ``--interval``, ``--timeout``, ``--start-period`` and
``--start-interval`` take them (Dockerfile reference, "HEALTHCHECK"; the grammar is Go's
``time.ParseDuration``: ``1m30s``, ``500ms``, ``.5s``, ``0``)."""

from __future__ import annotations

import re

from lamina.errors import InvalidArgument

# Docker's container.MinimumDuration: a HEALTHCHECK duration is 0 (inherit) or >= 1 ms.
MIN_HEALTHCHECK_NS = 1_000_000

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_UNIT_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """A Go duration (``1m30s``, ``500ms``, ``0``) in nanoseconds."""
    if text == "0":
        return 0
    if not text:
        raise InvalidArgument("empty duration")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            raise InvalidArgument(f"invalid duration {text!r}", hint="e.g. 30s, 1m30s, 500ms")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return int(total)
