"""Dockerfile words for the build: the shared lexer of :mod:`lamina.oci.shellwords`
(quotes, the escape character, ``$VAR`` substitution with every modifier), plus errors
positioned at the instruction."""

from __future__ import annotations

from collections.abc import Mapping

from lamina.builder.dockerfile.instructions import Location, ParseError
from lamina.errors import InvalidArgument
from lamina.oci.shellwords import (
    expand,
    expand_heredoc,
    expand_pairs,
    expand_words,
    glob_regex,
    split_raw,
    unclosed_quote,
)

__all__ = [
    "expand",
    "expand_at",
    "expand_heredoc",
    "expand_pairs",
    "expand_words",
    "glob_regex",
    "split_raw",
    "unclosed_quote",
]


def expand_at(location: Location, word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """:func:`expand`, with errors (``${X:?unset}``, a missing ``}``) raised as a
    :class:`ParseError` pointing at the instruction."""
    try:
        return expand(word, env, escape=escape)
    except InvalidArgument as exc:
        raise ParseError(location, exc.message) from exc
