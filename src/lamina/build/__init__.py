"""Build images from a Containerfile (row 4).

- ``parser``: :func:`parse` Dockerfile text into the typed AST of ``instructions``
  (pure: text in, AST out). ``lexer`` does directives, continuations and heredocs;
  ``words`` the quoting and ``$VAR`` substitution the executor applies per step;
  ``scope`` the ARG/ENV scoping rules (:func:`global_scope`, :class:`StageScope`).
"""

from __future__ import annotations

from lamina.build.instructions import Dockerfile, Location, ParseError, Stage
from lamina.build.parser import parse
from lamina.build.scope import StageScope, global_scope
from lamina.build.words import expand, expand_at, expand_heredoc, expand_pairs, expand_words

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
