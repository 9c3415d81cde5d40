"""The fields of a container record and its small files: ids, names (Docker's rule and
random names), RFC 3339 timestamps, the exit file, crash-safe writes with lamina's
errors. Shared by the records (:mod:`lamina.runtime.records.containers`) and
``lamina run``'s fast path.

Only light standard modules here (no dataclasses, no datetime): the fast path
(:mod:`lamina.runtime.plans.replay`) imports this, and its start-up time is a feature.
"""

from __future__ import annotations

import errno
import os
import time

from lamina.atomic import write_atomic
from lamina.errors import InvalidArgument, LaminaError
from lamina.lightstd import dumps
from lamina.stateroot import EXIT_FILE

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeVar

    T = TypeVar("T")
_HEX = frozenset("0123456789abcdef")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")

# Random names: an adjective and a noun, as `docker run` gives (own word lists).
_ADJECTIVES = (
    "agile amber bold brave bright calm clever cosmic crisp curious daring eager early fancy "
    "fearless gentle glad golden happy humble jolly keen kind lively lucid merry mighty "
    "nimble noble patient plucky polite proud quick quiet rapid serene sharp shiny silent "
    "steady sunny swift tidy vivid warm wise witty zealous zesty"
)
_NOUNS = (
    "albatross badger basalt beacon birch canyon cedar comet coral cricket delta dolphin "
    "falcon fjord galaxy garnet geyser glacier granite harbor heron island jaguar kestrel "
    "lagoon lantern lynx magnet maple meadow meteor nebula orchid otter pebble pelican "
    "prairie quartz raven reef sequoia sparrow summit tundra valley walrus willow wombat yak "
    "zephyr"
)
ADJECTIVES = tuple(_ADJECTIVES.split())
NOUNS = tuple(_NOUNS.split())


def os_error(action: str, what: str, exc: OSError) -> LaminaError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LaminaError(f"cannot {action} {what}: no space left", hint="free some disk space")
    return LaminaError(f"cannot {action} {what}: {exc.strerror or exc}")


def write_file_atomic(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Temp file, write, fsync, rename over ``path``, fsync the directory (no fsyncs
    with ``durable=False``: see :func:`lamina.atomic.write_atomic`)."""
    try:
        write_atomic(path, data, mode, durable=durable)
    except OSError as exc:
        raise os_error("write", path, exc) from exc


def write_exit(
    directory: str,
    code: int | None,
    finished: str,
    *,
    durable: bool = True,
    oom_killed: bool = False,
) -> None:
    """The keeper's ``exit.json``: how the container's process ended (``oom_killed``:
    the kernel's OOM killer struck in its memory cgroup)."""
    doc: dict[str, object] = {"exit_code": code, "finished": finished}
    if oom_killed:
        doc["oom_killed"] = True
    data = dumps(doc).encode()
    write_file_atomic(os.path.join(directory, EXIT_FILE), data, 0o644, durable=durable)


def now() -> str:
    """RFC 3339 UTC time in microseconds, like Docker's ``Created``
    (``2024-01-02T03:04:05.123456Z``)."""
    secs, ns = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def is_id(text: str) -> bool:
    """A container id: 64 lowercase hex digits (no `re`: start-up time)."""
    return len(text) == 64 and _HEX.issuperset(text)


def check_name(name: str) -> None:
    """Docker's container name rule: ``[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}``."""
    if not (0 < len(name) <= 128 and name[0] in _ALNUM and _NAME_CHARS.issuperset(name)):
        raise InvalidArgument(
            f"invalid container name {name!r}",
            hint="use letters, digits, '_', '.' and '-' (starting with a letter or digit)",
        )


def _pick(items: Sequence[T]) -> T:
    return items[int.from_bytes(os.urandom(4), "big") % len(items)]


def random_name(taken: set[str]) -> str:
    for _ in range(100):
        name = f"{_pick(ADJECTIVES)}_{_pick(NOUNS)}"
        if name not in taken:
            return name
    # Docker's answer to a crowded namespace: add a number.
    while True:
        name = f"{_pick(ADJECTIVES)}_{_pick(NOUNS)}{_pick(range(100))}"
        if name not in taken:
            return name
