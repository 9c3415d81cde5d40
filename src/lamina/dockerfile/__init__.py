"""The Dockerfile (Containerfile) language, pure: text in, typed values out, no I/O
(ARCHITECTURE.md row 1; in its own import-linter row just above :mod:`lamina.oci`,
whose config model it changes). The builder and ``lamina commit/import --change`` both
use it, so an instruction means one thing everywhere.

- ``lexer``: parser directives, continuations, heredocs; ``parser`` (:func:`parse`, and
  :func:`parse_changes` for ``--change``) and ``instructions``: the typed AST, with
  ``file:line:column`` errors;
- ``words``: quoting and ``$VAR`` substitution (bounded: :data:`MAX_EXPANSION`),
  applied per step at build time; ``scope``: ARG/ENV scoping;
- ``config_changes``: :func:`apply`, metadata instructions applied to an image config;
  :func:`apply_changes` for ``--change``; ``durations``: Go durations.
"""

from __future__ import annotations

from lamina.dockerfile.config_changes import (
    apply,
    apply_change,
    apply_changes,
    resolve_workdir,
    shell_of,
)
from lamina.dockerfile.durations import parse_duration
from lamina.dockerfile.instructions import (
    Dockerfile,
    Instruction,
    Location,
    ParseError,
    Stage,
)
from lamina.dockerfile.parser import CHANGE_INSTRUCTIONS, Changes, parse, parse_changes
from lamina.dockerfile.scope import PREDEFINED_ARGS, StageScope, global_scope
from lamina.dockerfile.words import (
    MAX_EXPANSION,
    expand,
    expand_at,
    expand_heredoc,
    expand_pairs,
    expand_words,
)

__all__ = [
    "CHANGE_INSTRUCTIONS",
    "MAX_EXPANSION",
    "PREDEFINED_ARGS",
    "Changes",
    "Dockerfile",
    "Instruction",
    "Location",
    "ParseError",
    "Stage",
    "StageScope",
    "apply",
    "apply_change",
    "apply_changes",
    "expand",
    "expand_at",
    "expand_heredoc",
    "expand_pairs",
    "expand_words",
    "global_scope",
    "parse",
    "parse_changes",
    "parse_duration",
    "resolve_workdir",
    "shell_of",
]
