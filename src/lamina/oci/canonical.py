"""Canonical JSON: the one byte form lamina writes for every document it digests.

Keys sorted, no insignificant whitespace, UTF-8 (not ``\\u`` escapes), integers only as
integers. The same value always gives the same bytes, so the same image always gets the
same digest (reproducible builds depend on it).
"""

from __future__ import annotations

import json
from typing import Any

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded

MAX_DOCUMENT_BYTES = 4 << 20  # manifests, indexes and configs (containers/image iolimits)
# The same cap by role, as the README documents them: every way an image enters the
# store (pull, load, import, build, commit) refuses a larger manifest or config, so
# every reader of the store (`lamina images`) can rely on them.
MANIFEST_MAX = MAX_DOCUMENT_BYTES
CONFIG_MAX = MAX_DOCUMENT_BYTES


def check_document_size(kind: str, size: int, what: str) -> None:
    """Refuse a ``kind`` ("manifest", "index" or "config") of ``size`` bytes over its cap."""
    limit = CONFIG_MAX if kind == "config" else MANIFEST_MAX
    if size > limit:
        raise LimitExceeded(
            f"{what}: the {kind} is {size} bytes, over lamina's {limit}-byte "
            f"({limit >> 20} MiB) cap on image {kind}s",
            hint="such an image cannot be used by lamina (nor by docker or podman); "
            "keep large data in layers, not in labels, ENV or history",
        )


def canonical_json(value: Any) -> bytes:
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"value cannot be written as canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (RFC 8259) and Go do not.
    raise InvalidFormat(f"{name} is not valid in JSON")


def load_json_object(data: bytes, what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> dict[str, Any]:
    """Parse a JSON document that must be an object; capped and with clear errors."""
    if len(data) > max_bytes:
        raise LimitExceeded(f"{what} is {len(data)} bytes, over the {max_bytes}-byte cap")
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidFormat(f"{what} is not valid JSON: {exc}") from exc
    except InvalidFormat as exc:
        raise InvalidFormat(f"{what} is not valid JSON: {exc.message}") from exc
    if not isinstance(value, dict):
        raise InvalidFormat(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
