"""The scheduler's JSON wire format (``docs/p2p.md``) to and from :mod:`lamina.p2p.api`.

Pure: dicts in, values out. Everything that arrives from the network is validated
here, field by field, so bad input from a peer becomes one
:class:`~lamina.errors.InvalidArgument` naming the field, never a ``KeyError`` or a
``TypeError`` deep in the scheduler. Caps bound what one message may make the
scheduler hold (a blob of at most ``MAX_PIECES`` pieces, ids of a few hundred bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast, get_args

from lamina.errors import InvalidArgument
from lamina.p2p.api import (
    Action,
    FinishOutcome,
    HostInfo,
    Parent,
    PieceFailure,
    PieceFailureReason,
    Report,
    Schedule,
)

MAX_ID = 512
MAX_URL = 4096
MAX_PIECES = 1 << 17
"""64 MiB pieces of a 8 TiB blob; far above any layer, and it bounds list sizes."""
MAX_SIZE = 1 << 53
MAX_UPLOAD_SLOTS = 1 << 16

_TASK = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_ACTIONS: frozenset[str] = frozenset(get_args(Action))
_REASONS: frozenset[str] = frozenset(get_args(PieceFailureReason))
_OUTCOMES: frozenset[str] = frozenset(get_args(FinishOutcome))

_HINT = "the peer and the scheduler must speak the protocol of docs/p2p.md"


def _bad(what: str) -> InvalidArgument:
    return InvalidArgument(f"bad scheduler message: {what}", hint=_HINT)


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, not {type(value).__name__}")
    return cast(Mapping[str, Any], value)


def _str(o: Mapping[str, Any], key: str, *, default: str | None = None, limit: int = MAX_ID) -> str:
    value = o.get(key, default)
    if not isinstance(value, str):
        if value is None:
            raise _bad(f"{key!r} is missing")
        raise _bad(f"{key!r} must be a string")
    if len(value) > limit:
        raise _bad(f"{key!r} is longer than {limit} characters")
    return value


def _id(o: Mapping[str, Any], key: str) -> str:
    value = _str(o, key)
    if not value or not value.isprintable():
        raise _bad(f"{key!r} must be a non-empty printable string")
    return value


def _int(o: Mapping[str, Any], key: str, *, default: int | None = None, hi: int = MAX_SIZE) -> int:
    value = o.get(key, default)
    # bool is an int in Python; true is not a size
    if isinstance(value, bool) or not isinstance(value, int):
        if value is None:
            raise _bad(f"{key!r} is missing")
        raise _bad(f"{key!r} must be an integer")
    if not 0 <= value <= hi:
        raise _bad(f"{key!r} = {value} is outside 0..{hi}")
    return value


def _bool(o: Mapping[str, Any], key: str, default: bool) -> bool:
    value = o.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{key!r} must be true or false")
    return value


def _list(o: Mapping[str, Any], key: str) -> list[Any]:
    value = o.get(key, [])
    if not isinstance(value, list):
        raise _bad(f"{key!r} must be a list")
    if len(value) > MAX_PIECES:
        raise _bad(f"{key!r} has more than {MAX_PIECES} entries")
    return value


def _pieces(o: Mapping[str, Any], key: str) -> tuple[int, ...]:
    out = []
    for n in _list(o, key):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < MAX_PIECES:
            raise _bad(f"{key!r} holds {n!r}, not a piece number")
        out.append(n)
    return tuple(out)


def _digests(o: Mapping[str, Any], key: str) -> tuple[str, ...]:
    out = []
    for d in _list(o, key):
        if not isinstance(d, str) or not _HEX.fullmatch(d):
            raise _bad(f"{key!r} holds {d!r}, not a lowercase sha256 hex digest")
        out.append(d)
    return tuple(out)


def _url(o: Mapping[str, Any], key: str, *, empty: bool = False) -> str:
    value = _str(o, key, default="" if empty else None, limit=MAX_URL)
    if (value or not empty) and not value.startswith(("http://", "https://")):
        raise _bad(f"{key!r} = {value!r} is not an http(s) URL")
    return value


def check_task(task: str) -> str:
    """A task id is a blob digest, ``sha256:<64 hex>`` (it names keys and URLs)."""
    if not _TASK.fullmatch(task):
        raise InvalidArgument(
            f"bad task {task!r}: a task is a blob digest, sha256:<64 lowercase hex>",
            hint=_HINT,
        )
    return task


def parse(body: bytes) -> object:
    """JSON from a request or response body; bad JSON is bad input."""
    import json

    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"the body is not JSON ({exc})") from exc


# -- hosts ----------------------------------------------------------------------------


def host_to_json(host: HostInfo) -> dict[str, Any]:
    return {
        "host_id": host.host_id,
        "addr": host.addr,
        "seed": host.seed,
        "rack": host.rack,
        "upload_slots": host.upload_slots,
    }


def host_from_json(value: object) -> HostInfo:
    o = _obj(value, "a host")
    slots = _int(o, "upload_slots", default=32, hi=MAX_UPLOAD_SLOTS)
    if slots < 1:
        raise _bad("'upload_slots' must be at least 1")
    return HostInfo(
        host_id=_id(o, "host_id"),
        addr=_url(o, "addr"),
        seed=_bool(o, "seed", False),
        rack=_str(o, "rack", default=""),
        upload_slots=slots,
    )


# -- schedules ------------------------------------------------------------------------


def parent_to_json(p: Parent) -> dict[str, Any]:
    return {"peer_id": p.peer_id, "host_id": p.host_id, "addr": p.addr}


def parent_from_json(value: object) -> Parent:
    o = _obj(value, "a parent")
    return Parent(peer_id=_id(o, "peer_id"), host_id=_id(o, "host_id"), addr=_url(o, "addr"))


def schedule_to_json(s: Schedule) -> dict[str, Any]:
    return {
        "action": s.action,
        "size": s.size,
        "piece_length": s.piece_length,
        "parents": [parent_to_json(p) for p in s.parents],
        "digests_from": s.digests_from,
        "digests": list(s.digests),
        "token": s.token,
        "retry_ms": s.retry_ms,
        "reason": s.reason,
    }


def schedule_from_json(value: object) -> Schedule:
    o = _obj(value, "a schedule")
    action = _str(o, "action")
    if action not in _ACTIONS:
        raise _bad(f"'action' = {action!r} is not one of {sorted(_ACTIONS)}")
    parents = o.get("parents", [])
    if not isinstance(parents, list) or len(parents) > 64:
        raise _bad("'parents' must be a list of at most 64 parents")
    piece_length = _int(o, "piece_length")
    size = _int(o, "size")
    if size and piece_length < 1:
        raise _bad("'piece_length' must be positive for a non-empty blob")
    return Schedule(
        action=cast(Action, action),
        size=size,
        piece_length=piece_length,
        parents=tuple(parent_from_json(p) for p in parents),
        digests_from=_int(o, "digests_from", default=0, hi=MAX_PIECES),
        digests=_digests(o, "digests"),
        token=_str(o, "token", default=""),
        retry_ms=_int(o, "retry_ms", default=500, hi=3_600_000),
        reason=_str(o, "reason", default="", limit=MAX_URL),
    )


# -- reports --------------------------------------------------------------------------


def failure_to_json(f: PieceFailure) -> dict[str, Any]:
    return {"piece": f.piece, "parent_id": f.parent_id, "reason": f.reason}


def failure_from_json(value: object) -> PieceFailure:
    o = _obj(value, "a piece failure")
    reason = _str(o, "reason")
    if reason not in _REASONS:
        raise _bad(f"'reason' = {reason!r} is not one of {sorted(_REASONS)}")
    return PieceFailure(
        piece=_int(o, "piece", hi=MAX_PIECES - 1),
        parent_id=_id(o, "parent_id"),
        reason=cast(PieceFailureReason, reason),
    )


def report_to_json(r: Report) -> dict[str, Any]:
    return {
        "peer_id": r.peer_id,
        "done": list(r.done),
        "digests_known": r.digests_known,
        "source_digests_from": r.source_digests_from,
        "source_digests": list(r.source_digests),
        "failed": [failure_to_json(f) for f in r.failed],
        "bytes_from_source": r.bytes_from_source,
        "bytes_from_peers": r.bytes_from_peers,
    }


def report_from_json(value: object) -> Report:
    o = _obj(value, "a report")
    return Report(
        peer_id=_id(o, "peer_id"),
        done=_pieces(o, "done"),
        digests_known=_int(o, "digests_known", default=0, hi=MAX_PIECES),
        source_digests_from=_int(o, "source_digests_from", default=0, hi=MAX_PIECES),
        source_digests=_digests(o, "source_digests"),
        failed=tuple(failure_from_json(f) for f in _list(o, "failed")),
        bytes_from_source=_int(o, "bytes_from_source", default=0),
        bytes_from_peers=_int(o, "bytes_from_peers", default=0),
    )


# -- register, finish, leave ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """The body of ``POST /v1/tasks/{task}/peers``."""

    peer_id: str
    host_id: str
    size: int
    source: str


def registration_to_json(r: Registration) -> dict[str, Any]:
    return {"peer_id": r.peer_id, "host_id": r.host_id, "size": r.size, "source": r.source}


def registration_from_json(value: object) -> Registration:
    o = _obj(value, "a registration")
    return Registration(
        peer_id=_id(o, "peer_id"),
        host_id=_id(o, "host_id"),
        size=_int(o, "size"),
        source=_url(o, "source", empty=True),
    )


@dataclass(frozen=True, slots=True)
class Finish:
    """The body of ``POST /v1/tasks/{task}/finish``."""

    peer_id: str
    outcome: FinishOutcome
    reason: str = ""


def finish_to_json(f: Finish) -> dict[str, Any]:
    return {"peer_id": f.peer_id, "outcome": f.outcome, "reason": f.reason}


def finish_from_json(value: object) -> Finish:
    o = _obj(value, "a finish")
    outcome = _str(o, "outcome")
    if outcome not in _OUTCOMES:
        raise _bad(f"'outcome' = {outcome!r} is not one of {sorted(_OUTCOMES)}")
    return Finish(
        peer_id=_id(o, "peer_id"),
        outcome=cast(FinishOutcome, outcome),
        reason=_str(o, "reason", default="", limit=MAX_URL),
    )


def leave_from_json(value: object) -> str:
    """The body of ``POST /v1/tasks/{task}/leave``: the peer id."""
    return _id(_obj(value, "a leave"), "peer_id")


# -- errors ---------------------------------------------------------------------------


def error_to_json(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if hint:
        body["hint"] = hint
    return body


def error_from_json(value: object) -> tuple[str, str, str | None]:
    """``(code, message, hint)`` of an error body; lenient: it only feeds a message."""
    if not isinstance(value, dict):
        return "UNKNOWN", str(value)[:200], None
    code = value.get("error")
    message = value.get("message")
    hint = value.get("hint")
    return (
        code if isinstance(code, str) else "UNKNOWN",
        message if isinstance(message, str) else "",
        hint if isinstance(hint, str) else None,
    )
