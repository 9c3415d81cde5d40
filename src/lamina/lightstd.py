"""Light stand-ins for standard-library helpers whose imports cost start-up time: JSON
(:func:`loads`, :func:`dumps`) without :mod:`json`, :class:`suppress` without
:mod:`contextlib`, and :class:`Flock`, an flock(2) ``with`` block. For the
start-up-critical path (``lamina run``'s fast path) and the row-0 modules it imports.

Why: ``import json`` pulls in ``re``, ``enum``, ``functools`` and ``collections``, and
``contextlib`` the last two: about 20 ms on a small machine, a third of what
``lamina run`` may add to bare runc.
The C accelerator :mod:`_json` that :mod:`json` itself uses needs none of them; this
module drives it directly (the same scanner and encoder, so the same results as
``json.loads``/``json.dumps`` with ``separators=(",", ":")``, ``ensure_ascii=True``, no
NaN). Where ``_json`` is missing (another Python), it falls back to :mod:`json`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


class Flock:
    """An exclusive flock(2) on ``path`` (created 0600) for the ``with`` block; the
    kernel drops it if the process dies. Blocking: the holders are lamina commands."""

    __slots__ = ("_fd", "_path")

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        import fcntl
        import os

        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise

    def __exit__(self, *exc: object) -> None:
        import os

        os.close(self._fd)  # the only descriptor: closing it releases the lock


class suppress:  # named as contextlib.suppress, which it replaces
    """``contextlib.suppress``: ignore the given exceptions in the block."""

    __slots__ = ("_kinds",)

    def __init__(self, *kinds: type[BaseException]) -> None:
        self._kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, self._kinds)


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _not_serializable(obj: object) -> Any:
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class _Context:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


def loads(data: bytes | str) -> Any:
    """``json.loads`` of one JSON document (ValueError when it is not one)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if _json is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        # typeshed types the argument as a scanner; the C code reads these attributes
        value, end = _json.make_scanner(_Context())(text, start)  # type: ignore[arg-type]
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after the JSON document at offset {end}")
    return value


def dumps(obj: Any, *, sort_keys: bool = False) -> str:
    """Compact ``json.dumps`` (``separators=(",", ":")``, ASCII, no NaN)."""
    if _json is None:
        import json

        return json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)
    encode = _json.make_encoder(
        {},  # markers: refuse circular structures
        _not_serializable,
        _json.encode_basestring_ascii,
        None,  # indent: the C encoder has none
        ":",
        ",",
        sort_keys,
        False,  # skipkeys
        False,  # allow_nan
    )
    return "".join(encode(obj, 0))
