"""The Dockerfile (Containerfile) language, pure: text in, typed values out, no I/O
(ARCHITECTURE.md row 1, just above :mod:`lamina.oci`, whose config model it changes).

- ``lexer``: parser directives, continuations, heredocs; ``parser`` and
  ``instructions``: the typed AST, with ``file:line:column`` errors;
- ``words``: quoting and ``$VAR`` substitution, applied per step at build time;
  ``scope``: ARG/ENV scoping;
- ``config_changes``: metadata instructions applied to an image config, used by the
  builder and by ``lamina commit/import --change`` alike.

The names below are imported on first use (PEP 562), so that ``--change`` does not
load what only a build needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.dockerfile.config_changes import apply_change, apply_changes, parse_duration
    from lamina.dockerfile.instructions import Dockerfile, Instruction, Location, ParseError, Stage
    from lamina.dockerfile.metadata import apply, shell_of
    from lamina.dockerfile.parser import parse
    from lamina.dockerfile.scope import PREDEFINED_ARGS, StageScope, global_scope
    from lamina.dockerfile.words import (
        expand,
        expand_at,
        expand_heredoc,
        expand_pairs,
        expand_words,
    )

_HOME = {
    "apply_change": "config_changes",
    "apply_changes": "config_changes",
    "parse_duration": "config_changes",
    "Dockerfile": "instructions",
    "Instruction": "instructions",
    "Location": "instructions",
    "ParseError": "instructions",
    "Stage": "instructions",
    "apply": "metadata",
    "shell_of": "metadata",
    "parse": "parser",
    "PREDEFINED_ARGS": "scope",
    "StageScope": "scope",
    "global_scope": "scope",
    "expand": "words",
    "expand_at": "words",
    "expand_heredoc": "words",
    "expand_pairs": "words",
    "expand_words": "words",
}

__all__ = [
    "PREDEFINED_ARGS",
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
    "parse_duration",
    "shell_of",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
