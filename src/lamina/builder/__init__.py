"""Build images from a Containerfile (row 4).

- ``dockerfile``: :func:`parse` Dockerfile text into a typed AST (pure);
- ``files``: the build context, ``.dockerignore``, COPY and ADD;
- ``sandbox``: RUN steps in runc on overlay snapshots, ``RUN --mount``;
- ``plan`` (the stage graph), ``executor`` and ``steps`` (running it), ``cache``
  (content-keyed step records), ``metadata`` (config and history changes), ``api``.
"""

from __future__ import annotations

from lamina.builder.dockerfile.instructions import Dockerfile, Location, ParseError, Stage
from lamina.builder.dockerfile.parser import parse
from lamina.builder.dockerfile.scope import StageScope, global_scope
from lamina.builder.dockerfile.words import (
    expand,
    expand_at,
    expand_heredoc,
    expand_pairs,
    expand_words,
)

__all__ = [
    "Dockerfile",
    "Location",
    "ParseError",
    "Stage",
    "StageScope",
    "expand",
    "expand_at",
    "expand_heredoc",
    "expand_pairs",
    "expand_words",
    "global_scope",
    "parse",
]
