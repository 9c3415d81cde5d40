"""The .dockerignore matcher. Input: patterns, a line ``---``, then paths to test."""

from __future__ import annotations

from lamina.builder.files.ignore import IgnoreMatcher


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    patterns, _, paths = text.partition("\n---\n")
    matcher = IgnoreMatcher.parse(patterns)
    for path in paths.splitlines() or ["a/b/c"]:
        matcher.ignored(path)
        matcher.may_contain_included(path)
