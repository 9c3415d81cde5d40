"""Container records on disk: ``<root>/containers/<id>/`` (layout in :mod:`lamina.stateroot`).

- :mod:`~lamina.runtime.records.containers`: :class:`Container` and
  :class:`ContainerStore` (create, update, look up, list, remove, under a lock).
- :mod:`~lamina.runtime.records.fields`: ids, names, timestamps, the exit file and
  crash-safe writes (light imports: the fast path writes records too).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.records.containers import (
        Container,
        ContainerStore,
        parse_time,
        status_text,
    )
    from lamina.runtime.records.fields import (
        check_name,
        is_id,
        now,
        random_name,
        write_exit,
    )

__all__ = [
    "Container",
    "ContainerStore",
    "check_name",
    "is_id",
    "now",
    "parse_time",
    "random_name",
    "status_text",
    "write_exit",
]

_HOME = {
    "Container": "containers",
    "ContainerStore": "containers",
    "parse_time": "containers",
    "status_text": "containers",
    "check_name": "fields",
    "is_id": "fields",
    "now": "fields",
    "random_name": "fields",
    "write_exit": "fields",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # here: importing this package costs nothing (start-up time)

    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
