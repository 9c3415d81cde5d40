"""Glob patterns matched in linear time: Go's ``filepath.Match`` and moby's
``patternmatcher`` (the ``.dockerignore`` rules), without a backtracking regex.

Python's ``re`` backtracks: ``**/**/**/x`` (``(.*/)?(.*/)?(.*/)?x``) costs O(n**k) on a
path of n characters, and ``*a*a*a*b`` does the same inside one name. A pattern here
is compiled to tokens and run as an NFA over the path, one character at a time, with
the state sets cached as a lazy DFA: O(len(path) * len(pattern)) at worst, one dict
lookup per character once warm. (Go's regexp, which moby uses, is an automaton too.)

moby compiles a pattern in one of four ways, and so does :func:`compile_ignore`:

- no magic at all: the path must equal the pattern (``exact``);
- magic only in a trailing ``**``: the path must start with what comes before
  (``prefix``; ``a**`` matches ``ab/c``, ``a/**`` does not match ``a``);
- a leading ``**`` and no other magic: the path must end with what follows
  (``suffix``; ``**/a`` is ``a`` at any depth, and ``**a`` is any path ending in ``a``);
- anything else: a regex where ``*`` is ``[^/]*``, ``?`` is ``[^/]``, ``**`` is
  ``(.*/)?`` (a trailing one ``.*``), ``\\x`` is ``x`` and ``[...]`` a class (a
  negated class matches ``/`` too, as it does in moby's regex). In this mode ``.``
  is Go's, which does not match a newline.

Character classes are read as ``filepath.Match`` reads them (the syntax check moby
makes first): ``[^a-c]``, ``\\]`` escapes, no ``[]...]``. (moby then also turns a
``*`` or ``?`` *inside* a class into regex syntax; that accident is not copied.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.errors import InvalidArgument

# token kinds
_LIT, _CLASS, _ONE, _STAR, _DSTAR, _REST = range(6)
_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)
_MAX_CACHE = 1 << 14  # DFA transitions kept per pattern; cleared (not grown) past this


@dataclass(frozen=True, slots=True)
class _Class:
    negate: bool
    singles: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    def __contains__(self, c: str) -> bool:
        hit = c in self.singles or any(lo <= c <= hi for lo, hi in self.ranges)
        return hit != self.negate


_Token = tuple[int, object]


def bad_pattern(pattern: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"syntax error in pattern {pattern!r}: {why}",
        hint="escape a literal [, ] or \\ with a backslash (Go filepath.Match rules)",
    )


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    if i >= n:
        raise bad_pattern(pattern, "unclosed [")
    c = pattern[i]
    if c in "-]":
        raise bad_pattern(pattern, f"unexpected {c!r} in a character class")
    if c == "\\":
        if i + 1 >= n:
            raise bad_pattern(pattern, "ends with an escape")
        return pattern[i + 1], i + 2
    return c, i + 1


def parse_class(pattern: str, start: int) -> tuple[bool, list[tuple[str, str]], int]:
    """``[...]`` at ``start`` as filepath.Match reads it: (negated, [(lo, hi)], index
    after the ``]``). Malformed classes are InvalidArgument, as Go's ErrBadPattern."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[tuple[str, str]] = []
    while True:
        if i >= n:
            raise bad_pattern(pattern, "unclosed [")
        if pattern[i] == "]" and items:
            return negate, items, i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if i < n and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
            if hi < lo:
                raise bad_pattern(pattern, f"bad range {lo}-{hi}")
        items.append((lo, hi))


def _class_token(negate: bool, items: list[tuple[str, str]]) -> _Token:
    singles = frozenset(lo for lo, hi in items if lo == hi)
    ranges = tuple((lo, hi) for lo, hi in items if lo != hi)
    return (_CLASS, _Class(negate, singles, ranges))


def _push(tokens: list[_Token], token: _Token) -> None:
    # "**/**" is "**" and "**" is "*": a run of one repeating token is one token
    # (this keeps hostile patterns short, not only fast).
    if tokens and token[0] in (_STAR, _DSTAR, _REST) and tokens[-1][0] == token[0]:
        return
    tokens.append(token)


@dataclass(slots=True)
class Glob:
    """A compiled pattern; ``fullmatch`` and ``match_or_parent`` are safe to call from
    several threads (the transition cache only ever gains correct entries)."""

    pattern: str
    kind: int
    literal: str  # exact: the path; prefix: its start; suffix: its end
    tokens: tuple[_Token, ...]
    newline: bool  # whether "." (in ** and trailing **) matches "\n"
    slash_class: bool = False  # a negated class, which may match "/"
    _closure: tuple[int, ...] = field(default=(), repr=False)
    _cache: dict[tuple[int, str], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        m = len(self.tokens)
        closure = [0] * (2 * m + 1)
        closure[2 * m] = 1 << (2 * m)
        for i in range(m - 1, -1, -1):
            skip = self.tokens[i][0] in (_STAR, _DSTAR, _REST)
            closure[2 * i] = (1 << (2 * i)) | (closure[2 * i + 2] if skip else 0)
            closure[2 * i + 1] = 1 << (2 * i + 1)  # inside a "**": no epsilon moves
        self._closure = tuple(closure)

    @property
    def deep(self) -> bool:
        """Whether a match may have more path components than the pattern."""
        return (
            self.kind in (_PREFIX, _SUFFIX)
            or self.slash_class
            or any(t[0] in (_DSTAR, _REST) for t in self.tokens)
        )

    # ------------------------------------------------------------------ automaton

    def _step(self, state: int, c: str) -> int:
        key = (state, c)
        nxt = self._cache.get(key)
        if nxt is not None:
            return nxt
        nxt = 0
        tokens, closure, dot = self.tokens, self._closure, self.newline or c != "\n"
        rest = state
        while rest:
            low = rest & -rest
            rest ^= low
            p = low.bit_length() - 1
            i, inside = divmod(p, 2)
            if i >= len(tokens):
                continue  # accepting; nothing follows
            kind, arg = tokens[i]
            if inside:  # within "(.*/)": "." loops, "/" may leave
                if dot:
                    nxt |= closure[p]
                if c == "/":
                    nxt |= closure[p + 1]
            elif kind == _LIT:
                if c == arg:
                    nxt |= closure[p + 2]
            elif kind == _CLASS:
                if c in arg:  # type: ignore[operator]
                    nxt |= closure[p + 2]
            elif kind == _ONE:
                if c != "/":
                    nxt |= closure[p + 2]
            elif kind == _STAR:
                if c != "/":
                    nxt |= closure[p]
            elif kind == _DSTAR:
                if dot:
                    nxt |= closure[p + 1]
                if c == "/":
                    nxt |= closure[p + 2]
            elif dot:  # _REST
                nxt |= closure[p]
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[key] = nxt
        return nxt

    def _run(self, text: str, at_slash: bool) -> bool:
        accept = 1 << (2 * len(self.tokens))
        state = self._closure[0]
        step = self._step
        for c in text:
            if at_slash and c == "/" and state & accept:
                return True
            state = step(state, c)
            if not state:
                return False
        return bool(state & accept)

    # ------------------------------------------------------------------ matching

    def fullmatch(self, path: str) -> bool:
        """Whether the whole of ``path`` matches."""
        if self.kind == _EXACT:
            return path == self.literal
        if self.kind == _PREFIX:
            return path.startswith(self.literal)
        if self.kind == _SUFFIX:
            s = self.literal
            return path.endswith(s) or (s[:1] == "/" and path == s[1:])
        return self._run(path, False)

    def match_or_parent(self, path: str) -> bool:
        """Whether ``path`` or one of its parent directories matches (a pattern that
        matches a directory takes everything below it)."""
        if self.kind == _EXACT:
            s = self.literal
            return path == s or (path.startswith(s) and path[len(s) : len(s) + 1] == "/")
        if self.kind == _PREFIX:
            return path.startswith(self.literal)  # a parent's start is the path's start
        if self.kind == _SUFFIX:
            end = path.find("/")
            while end >= 0:
                if self.fullmatch(path[:end]):
                    return True
                end = path.find("/", end + 1)
            return self.fullmatch(path)
        return self._run(path, True)


def compile_ignore(pattern: str) -> Glob:
    """A cleaned ``.dockerignore`` pattern, compiled as moby's patternmatcher does."""
    tokens: list[_Token] = []
    kind = _EXACT
    slash_class = False
    i, n, count = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" is "**"
                if i >= n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        _push(tokens, (_REST, None))
                        kind = _REGEX
                else:
                    _push(tokens, (_DSTAR, None))
                    kind = _REGEX
                if count == 0:
                    kind = _SUFFIX
            else:
                _push(tokens, (_STAR, None))
                kind = _REGEX
        elif c == "?":
            tokens.append((_ONE, None))
            kind = _REGEX
        elif c == "\\":
            if i >= n:
                raise bad_pattern(pattern, "ends with an escape")
            tokens.append((_LIT, pattern[i]))
            i += 1
            kind = _REGEX
        elif c == "[":
            negate, items, i = parse_class(pattern, i - 1)
            tokens.append(_class_token(negate, items))
            slash_class = slash_class or negate
            kind = _REGEX
        elif c == "]":
            tokens.append((_LIT, c))
            kind = _REGEX
        else:
            tokens.append((_LIT, c))
        count += 1
    literal = ""
    if kind == _EXACT:
        literal = pattern
    elif kind == _PREFIX:
        literal = pattern[:-2]  # without the trailing "**"
    elif kind == _SUFFIX:
        literal = pattern[2:]  # without the leading "**"
    # In regex mode "." is Go's (no newline); prefix and suffix are string tests.
    return Glob(pattern, kind, literal, tuple(tokens), kind != _REGEX, slash_class)


def compile_name(pattern: str) -> Glob:
    """A ``filepath.Match`` pattern for one path component (``*`` and ``?`` never
    match ``/``; no ``**``): what COPY wildcards and each part of an ignore pattern use."""
    tokens: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            _push(tokens, (_STAR, None))
        elif c == "?":
            tokens.append((_ONE, None))
        elif c == "\\":
            if i >= n:
                raise bad_pattern(pattern, "ends with an escape")
            tokens.append((_LIT, pattern[i]))
            i += 1
        elif c == "[":
            negate, items, i = parse_class(pattern, i - 1)
            # filepath.Match: a negated class never matches the separator
            items = [*items, ("/", "/")] if negate else items
            tokens.append(_class_token(negate, items))
        else:
            tokens.append((_LIT, c))
    return Glob(pattern, _REGEX, "", tuple(tokens), True)
