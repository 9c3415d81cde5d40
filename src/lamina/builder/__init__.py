"""Build images from a Containerfile (row 4).

The language itself (parser, instruction model, words, scope, config changes) is
:mod:`lamina.dockerfile`, shared with ``lamina commit/import --change``. Here:

- ``files``: the build context, ``.dockerignore``, COPY and ADD;
- ``sandbox``: RUN steps in runc on overlay snapshots, ``RUN --mount``;
- ``plan`` (the stage graph), ``executor`` and ``steps`` (running it), ``cache``
  (content-keyed step records), ``api``.

The names below are the public API. They are imported when first used, not here, so
that importing :mod:`lamina.builder.api` (the CLI does, for :class:`Event`) loads
neither runc nor the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.builder.api import BuildOptions, BuildResult, Event, StepFailed
    from lamina.builder.cache import BuildCache
    from lamina.builder.executor import Builder
    from lamina.builder.plan import Plan

_HOMES = {
    "BuildOptions": "lamina.builder.api",
    "BuildResult": "lamina.builder.api",
    "Event": "lamina.builder.api",
    "StepFailed": "lamina.builder.api",
    "BuildCache": "lamina.builder.cache",
    "Builder": "lamina.builder.executor",
    "Plan": "lamina.builder.plan",
}

__all__ = [
    "BuildCache",
    "BuildOptions",
    "BuildResult",
    "Builder",
    "Event",
    "Plan",
    "StepFailed",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
