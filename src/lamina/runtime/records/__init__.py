"""Container records on disk: ``<root>/containers/<id>/`` (layout in :mod:`lamina.stateroot`).

- :mod:`~lamina.runtime.records.containers`: :class:`Container` and
  :class:`ContainerStore` (create, update, look up, list, remove, under a lock).
- :mod:`~lamina.runtime.records.fields`: ids, names, timestamps, the exit file and
  crash-safe writes (light imports: the fast path writes records too).
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.records.containers import (
        Container,
        ContainerStore,
        containers_by_image,
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
    "containers_by_image",
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
    "containers_by_image": "containers",
    "parse_time": "containers",
    "status_text": "containers",
    "check_name": "fields",
    "is_id": "fields",
    "now": "fields",
    "random_name": "fields",
    "write_exit": "fields",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
