""".dockerignore: which files of the build context COPY and ADD may see.

The rules are BuildKit's (Dockerfile reference, ".dockerignore file"; moby's
``patternmatcher``), as the research note §3 summarises them:

- one pattern a line; lines starting with ``#`` are comments; blank lines are skipped;
  surrounding white space is trimmed;
- a leading ``!`` makes the pattern an exception (it re-includes what it matches);
- patterns are cleaned like Go's ``filepath.Clean`` and a leading ``/`` is dropped, so
  ``/a/./b/`` means ``a/b``;
- matching is Go's ``filepath.Match`` (``*`` and ``?`` never match ``/``, ``[a-z]``,
  ``[^a]``, ``\\`` escapes) plus ``**``, which matches any number of directories (zero
  included): ``**/*.md`` is every ``.md`` at any depth, ``*.md`` only those at the top;
- a pattern that matches a directory matches everything below it;
- the LAST pattern that matches a path decides (so ``*.md`` then ``!README.md`` keeps
  README.md, and the reverse order ignores it).

Ignoring the Dockerfile or the ``.dockerignore`` file hides them from COPY and ADD only;
the builder still reads them (``load_ignore`` reads the file whatever it says).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lamina.builder.files.pathglob import (
    Glob,
    bad_pattern,
    compile_ignore,
    compile_name,
    parse_class,
)
from lamina.errors import InvalidArgument, LimitExceeded

MAX_IGNORE_BYTES = 4 << 20  # a .dockerignore bigger than this is not a real one
_MAGIC = frozenset("*?[\\")
# a path that filepath.Clean would change: "", "/x", "x/", "a//b", "./a", "a/../b", "a/."
_UNCLEAN = re.compile(r"^$|^/|/$|//|(?:^|/)\.\.?(?:/|$)")


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` has a wildcard (or an escape) that filepath.Match would read."""
    return any(c in _MAGIC for c in pattern)


def glob_regex(pattern: str, *, double_star: bool = False) -> str:
    """The regex (without anchors) of a Go ``filepath.Match`` pattern on ``/`` paths.

    ``double_star`` adds the dockerignore ``**`` (any number of directories). A
    malformed pattern (``[`` unclosed, ``[]``, a trailing ``\\``) is InvalidArgument, as
    Go's ErrBadPattern.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" is "**"
                # "**" at the end matches everything; elsewhere any directories (or none)
                out.append(".*" if i >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                raise bad_pattern(pattern, "ends with an escape")
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            cls, i = _char_class(pattern, i)
            out.append(cls)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """Translate ``[...]`` at ``start``; return (regex, index after the ``]``)."""
    negate, items, end = parse_class(pattern, start)
    body = "".join(
        re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in items
    )
    # Negated classes never match "/": a class stands for one character of one name.
    return (f"[^/{body}]" if negate else f"[{body}]"), end


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` for ``/`` paths (``""`` becomes ``"."``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    body = "/".join(parts)
    if rooted:
        return "/" + body
    return body or "."


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    exclusion: bool  # a "!" pattern: a match re-includes
    glob: Glob
    parts: tuple[Glob | None, ...]  # per component; None for a "**" component
    deep: bool  # may match at any depth ("**", or a negated class, which matches "/")


def _compile(text: str, exclusion: bool) -> _Pattern:
    glob = compile_ignore(text)
    parts = tuple(None if "**" in comp else compile_name(comp) for comp in text.split("/"))
    return _Pattern(text, exclusion, glob, parts, "**" in text or glob.deep)


class IgnoreMatcher:
    """A parsed .dockerignore; immutable after construction, safe to share."""

    __slots__ = ("_has_exceptions", "_patterns")

    def __init__(self, patterns: tuple[_Pattern, ...] = ()) -> None:
        self._patterns = patterns
        self._has_exceptions = any(p.exclusion for p in patterns)

    @classmethod
    def parse(cls, text: str) -> IgnoreMatcher:
        """Parse the text of a .dockerignore file (see the module docstring)."""
        patterns: list[_Pattern] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    continue
            pattern = clean(line)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            patterns.append(_compile(pattern, exclusion))
        return cls(tuple(patterns))

    @property
    def patterns(self) -> tuple[str, ...]:
        """The cleaned patterns, ``!`` kept, in order (for cache keys and messages)."""
        return tuple(("!" if p.exclusion else "") + p.text for p in self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def ignored(self, relpath: str) -> bool:
        """Whether the context path ``relpath`` (``a/b/c.txt``) is ignored."""
        if not self._patterns:
            return False
        path = relpath
        if _UNCLEAN.search(path) is not None:
            path = clean(path.lstrip("/"))
        if path == ".":
            return False  # the context root itself is never ignored
        result = False
        for pattern in self._patterns:
            if result != pattern.exclusion:
                continue  # this pattern cannot change the answer
            # A pattern matches a path when it matches the path or one of its parents.
            if pattern.glob.match_or_parent(path):
                result = not pattern.exclusion
        return result

    def may_contain_included(self, reldir: str) -> bool:
        """False only when ``reldir`` and everything below it is surely ignored.

        Every pattern that matches ``reldir`` (or a parent) matches all of its
        descendants too, so only a ``!`` pattern that is deeper than ``reldir`` (or has
        ``**``) and whose first components fit ``reldir`` can re-include something.
        """
        if not self.ignored(reldir):
            return True
        if not self._has_exceptions:
            return False
        parts = clean(reldir.lstrip("/")).split("/")
        for pattern in self._patterns:
            if not pattern.exclusion:
                continue
            if pattern.deep:
                if _prefix_fits(pattern.parts, parts):
                    return True
                continue
            if len(pattern.parts) <= len(parts):
                continue  # it matches reldir or a parent, or nothing below: no change
            if _prefix_fits(pattern.parts, parts):
                return True
        return False


def _prefix_fits(pparts: tuple[Glob | None, ...], parts: list[str]) -> bool:
    for comp, name in zip(pparts, parts, strict=False):
        if comp is None:
            return True  # "**": anything below may match
        if not comp.fullmatch(name):
            return False
    return True


def _read_capped(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_IGNORE_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_IGNORE_BYTES:
        raise LimitExceeded(f"{path} is over {MAX_IGNORE_BYTES} bytes")
    return data.decode("utf-8", "replace")


def load_ignore(context_dir: str, dockerfile: str | None) -> IgnoreMatcher:
    """The ignore rules of a build: ``<Dockerfile name>.dockerignore`` next to the
    Dockerfile wins over ``CONTEXT/.dockerignore`` (BuildKit); none: ignore nothing.

    ``dockerfile`` is a path as given to ``-f`` (tried as is, then inside the context).
    """
    if dockerfile:
        candidates = [dockerfile + ".dockerignore"]
        if not os.path.isabs(dockerfile):
            candidates.append(os.path.join(context_dir, dockerfile) + ".dockerignore")
        for candidate in candidates:
            text = _read_capped(candidate)
            if text is not None:
                return IgnoreMatcher.parse(text)
    text = _read_capped(os.path.join(context_dir, ".dockerignore"))
    return IgnoreMatcher.parse(text or "")
