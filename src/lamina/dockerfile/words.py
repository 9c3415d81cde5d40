"""Dockerfile words: quotes, the escape character and ``$VAR`` substitution.

Dockerfile reference, "Environment replacement": ``'...'`` is literal; in ``"..."`` the
escape character escapes only ``"``, ``$`` and itself; outside quotes it escapes any
character. ``$name`` and ``${name}`` expand, with ``${name:-word}``, ``${name-word}``,
``${name:+word}``, ``${name+word}``, ``${name:?word}``, ``${name?word}`` and the
pattern modifiers ``${name#p}``, ``${name##p}``, ``${name%p}``, ``${name%%p}``,
``${name/p/r}`` and ``${name//p/r}`` (``p`` a shell glob). Unset variables expand to
nothing.

Expansion is bounded: one call may produce at most :data:`MAX_EXPANSION` characters by
substitution (``ENV A=$A$A`` ten times over would otherwise double a value each line
and ``${A//?/$A}`` square it); past that it raises :class:`~lamina.errors.LimitExceeded`.
The pattern modifiers match as bash does (shortest/longest; leftmost, then longest)
and take time linear in the value: a glob with a star runs as an automaton
(:class:`_Glob`), one without is a fixed-length regex.

The escape character is a parameter (``# escape=`` may make it a backtick). One lexer
serves the builder and ``--change`` (:mod:`lamina.dockerfile.config_changes`), which
Docker parses with the same rules. Values are expanded when a step runs, not when the
file is parsed; :func:`expand_at` raises errors positioned at the instruction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lamina.dockerfile.instructions import Location, ParseError
from lamina.errors import InvalidArgument, LimitExceeded

# Characters one expansion may produce by substitution: far above any real word
# (a config is at most 4 MiB), far below what would exhaust memory.
MAX_EXPANSION = 1 << 20

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SPECIAL = frozenset("@*#?-$!")
_DIGITS = frozenset("0123456789")
_MODIFIERS = (":-", "-", ":+", "+", ":?", "?")


def glob_regex(pattern: str) -> str:
    """A shell glob (``*``, ``?``, ``[...]``, ``\\x``) as a regular expression."""
    return "".join(_glob_pieces(pattern))


def _glob_pieces(pattern: str) -> list[str]:
    """The glob as regex pieces, one per glob token (``.*`` for a star)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            # A "]" right after "[" or "[!" is a member, not the end of the set.
            j = i + 1 if pattern[i : i + 1] in ("!", "^") else i
            end = pattern.find("]", j + 1 if pattern[j : j + 1] == "]" else j)
            if end == -1:
                out.append(re.escape(ch))
                continue
            body = pattern[i:end]
            negate = body[:1] in ("!", "^")
            members = "".join(c if c == "-" else re.escape(c) for c in body[negate:])
            out.append("[" + ("^" if negate else "") + members + "]")
            i = end + 1
        else:
            out.append(re.escape(ch))
    return out


class _Glob:
    """A shell glob run as an NFA over the value, state sets cached as a lazy DFA.

    A backtracking regex (or a fullmatch per prefix) is quadratic or worse on a value of
    MAX_EXPANSION characters (``${A%%*x}``, ``${A//a*a*a*b/}``); this is linear in the
    value times the pattern. Positions 0..m; a star (None) loops and may be skipped.
    """

    __slots__ = ("_accept", "_cache", "_closure", "_tokens")

    def __init__(self, tokens: list[re.Pattern[str] | None]) -> None:
        self._tokens = tokens
        m = len(tokens)
        closure = [0] * (m + 1)
        closure[m] = 1 << m
        for i in range(m - 1, -1, -1):
            closure[i] = (1 << i) | (closure[i + 1] if tokens[i] is None else 0)
        self._closure, self._accept = closure, 1 << m
        self._cache: dict[tuple[int, str], int] = {}

    @classmethod
    def compile(cls, pattern: str, *, reverse: bool = False, anywhere: bool = False) -> _Glob:
        """``reverse``: the glob of the reversed strings; ``anywhere``: a leading star."""
        pieces = _glob_pieces(pattern)
        tokens: list[re.Pattern[str] | None] = [
            None if p == ".*" else _compile(p, pattern) for p in pieces
        ]
        if reverse:
            tokens.reverse()
        return cls([None, *tokens] if anywhere else tokens)

    def _step(self, state: int, c: str) -> int:
        nxt = self._cache.get((state, c))
        if nxt is None:
            nxt, rest = 0, state
            while rest:
                low = rest & -rest
                rest ^= low
                i = low.bit_length() - 1
                if i == len(self._tokens):
                    continue
                token = self._tokens[i]
                if token is None:
                    nxt |= self._closure[i]
                elif token.fullmatch(c):
                    nxt |= self._closure[i + 1]
            if len(self._cache) > 1 << 14:
                self._cache.clear()
            self._cache[(state, c)] = nxt
        return nxt

    def ends(self, text: str, start: int = 0) -> tuple[int, int] | None:
        """The first and the last ``end`` such that ``text[start:end]`` matches."""
        state, first, last = self._closure[0], -1, -1
        if state & self._accept:
            first = last = start
        for i in range(start, len(text)):
            state = self._step(state, text[i])
            if not state:
                break
            if state & self._accept:
                last = i + 1
                first = last if first < 0 else first
        return None if first < 0 else (first, last)

    def starts(self, text: str) -> bytearray:
        """For a glob compiled ``reverse`` and ``anywhere``: flags, ``[s]`` set when a
        match of the forward glob starts at ``s`` of ``text``."""
        n = len(text)
        flags = bytearray(n + 1)
        state = self._closure[0]
        flags[n] = bool(state & self._accept)
        for j in range(n):
            state = self._step(state, text[n - 1 - j])
            if state & self._accept:
                flags[n - 1 - j] = 1
        return flags


def _compile(regex: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as exc:  # a range that ends before it starts: "[z-a]"
        raise InvalidArgument(f"bad pattern {pattern!r}: {exc}") from exc


def _fixed(pattern: str) -> re.Pattern[str] | None:
    """The regex of a glob without a star: every match has the same length, so a
    regex finds bash's matches, fast and without backtracking."""
    pieces = _glob_pieces(pattern)
    return None if ".*" in pieces else _compile("".join(pieces), pattern)


def _strip_prefix(value: str, pattern: str, longest: bool) -> str:
    fixed = _fixed(pattern)
    if fixed is not None:
        found = fixed.match(value)
        return value[found.end() :] if found else value
    ends = _Glob.compile(pattern).ends(value)
    if ends is None:
        return value
    return value[ends[1] if longest else ends[0] :]


def _strip_suffix(value: str, pattern: str, longest: bool) -> str:
    fixed = _fixed(pattern)
    if fixed is not None:
        size = len(_glob_pieces(pattern))  # one character per piece
        found = fixed.fullmatch(value, max(len(value) - size, 0)) if size <= len(value) else None
        return value[: len(value) - size] if found else value
    ends = _Glob.compile(pattern, reverse=True).ends(value[::-1])
    if ends is None:
        return value
    return value[: len(value) - (ends[1] if longest else ends[0])]


def _too_long() -> LimitExceeded:
    return LimitExceeded(
        f"variable substitution would produce more than {MAX_EXPANSION} characters",
        hint=LIMIT_HINT,
    )


LIMIT_HINT = (
    "an image config holds at most 4 MiB (registries refuse bigger ones); keep ARG, "
    "ENV and LABEL values small and pass big data as files (COPY)"
)


def limit_at(location: Location, exc: LimitExceeded) -> LimitExceeded:
    """``exc`` again, its message starting with the instruction's ``file:line:col``."""
    if exc.message.startswith(f"{location}: "):
        return exc
    return LimitExceeded(f"{location}: {exc.message}", hint=exc.hint)


def _replace(value: str, pattern: str, replacement: str, every: bool) -> str:
    """bash's ``${v/p/r}`` and ``${v//p/r}``: the leftmost match, longest at its start.
    Once a glob with a star has matched, nothing after it can (a later match would
    extend this one), so the scans add up to O(len(value) * len(pattern))."""
    if not pattern:
        return value
    fixed = _fixed(pattern)
    if fixed is not None:  # all matches one length: leftmost is leftmost-longest
        budget = MAX_EXPANSION

        def substitute(_match: re.Match[str]) -> str:
            nonlocal budget
            budget -= len(replacement)
            if budget < 0:
                raise _too_long()
            return replacement

        return fixed.sub(substitute, value, count=0 if every else 1)
    forward = _Glob.compile(pattern)
    if not value:  # bash: an empty value is replaced when the glob matches ""
        return replacement if forward.ends(value) else value
    starts = _Glob.compile(pattern, reverse=True, anywhere=True).starts(value)
    out: list[str] = []
    budget, pos, n = MAX_EXPANSION, 0, len(value)
    while pos < n:
        start = starts.find(1, pos, n)
        if start < 0:
            break
        ends = forward.ends(value, start)
        if ends is None or ends[1] == start:  # only all-star globs match "": not here
            break
        budget -= len(replacement)
        if budget < 0:
            raise _too_long()
        out += (value[pos:start], replacement)
        pos = ends[1]
        if not every:
            break
    out.append(value[pos:])
    return "".join(out)


class _Out:
    """Accumulates characters into words; ``raw`` characters never split."""

    __slots__ = ("current", "started", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.current: list[str] = []
        self.started = False

    def raw(self, text: str) -> None:
        self.current.append(text)
        self.started = True

    def splitting(self, text: str) -> None:
        for ch in text:
            if ch.isspace():
                self.end()
            else:
                self.raw(ch)

    def end(self) -> None:
        if self.started:
            self.words.append("".join(self.current))
        self.current, self.started = [], False


class _Lexer:
    __slots__ = ("env", "escape", "pos", "produced", "raw", "split", "text")

    def __init__(
        self, text: str, env: Mapping[str, str], split: bool, escape: str, raw: bool = False
    ) -> None:
        self.text, self.env, self.split, self.escape, self.pos = text, env, split, escape, 0
        # raw: quotes and escapes stay in the output (heredoc bodies); only $ expands.
        self.raw = raw
        self.produced = 0  # characters substituted so far, against MAX_EXPANSION

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def run(self, stops: str = "") -> _Out:
        out = _Out()
        while self.pos < len(self.text):
            ch = self._peek()
            if ch in stops and stops:
                break
            self.pos += 1
            if ch == "'":
                out.raw(self._single_quoted())
            elif ch == '"':
                out.raw(self._double_quoted())
            elif ch == "$":
                value = self._dollar()
                if self.split:
                    out.splitting(value)
                elif value:
                    out.raw(value)
            elif ch == self.escape:
                if self.pos < len(self.text):  # an escape at the very end is dropped
                    out.raw(ch + self._next() if self.raw else self._next())
                elif self.raw:
                    out.raw(ch)
            elif self.split and ch.isspace():
                out.end()
            else:
                out.raw(ch)
        return out

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end == -1:
            raise InvalidArgument(f"missing closing single quote in {self.text!r}")
        value, self.pos = self.text[self.pos : end], end + 1
        return f"'{value}'" if self.raw else value

    def _double_quoted(self) -> str:
        parts: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise InvalidArgument(f"missing closing double quote in {self.text!r}")
            ch = self._next()
            if ch == '"':
                return f'"{"".join(parts)}"' if self.raw else "".join(parts)
            if ch == "$":
                parts.append(self._dollar())
            elif ch == self.escape and self._peek() in ('"', "$", self.escape):
                parts.append(ch + self._next() if self.raw else self._next())
            elif ch == self.escape and not self._peek():
                continue
            else:
                parts.append(ch)

    def _name(self) -> str:
        # Positional ($1, $999) and special ($@, $#, $?, ...) parameters are names
        # too; they are never set in a Dockerfile, so they expand to nothing.
        start = self.pos
        first = self._peek()
        if first in _DIGITS:
            while self._peek() and self._peek() in _DIGITS:
                self.pos += 1
            return self.text[start : self.pos]
        if first and first in _SPECIAL:
            self.pos += 1
            return first
        # Names are letters (any script, as Go's unicode.IsLetter), digits and "_".
        while self._peek() and (self._peek() in _NAME_CHARS or self._peek().isalpha()):
            self.pos += 1
        return self.text[start : self.pos]

    def _word(self, stops: str) -> str:
        # The word after a modifier is one word even when splitting; its expansion
        # is split (or not) with the rest of the value by the caller.
        saved, self.split = self.split, False
        try:
            return "".join(self.run(stops=stops).current)
        finally:
            self.split = saved

    def _close(self) -> None:
        if self._next() != "}":
            raise InvalidArgument(f"missing '}}' in {self.text!r}")

    def _dollar(self) -> str:
        value = self._substitute()
        self.produced += len(value)
        if self.produced > MAX_EXPANSION:
            raise _too_long()
        return value

    def _substitute(self) -> str:
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        name = self._name()
        if not name:
            raise InvalidArgument(f"bad substitution in {self.text!r}: no variable name")
        op = self._next()
        if not op:
            raise InvalidArgument(f"missing '}}' in {self.text!r}")
        if op == "}":
            return self.env.get(name, "")
        value = self.env.get(name)
        if op in ("#", "%"):
            longest = self._peek() == op
            if longest:
                self.pos += 1
            pattern = self._word("}")
            self._close()
            strip = _strip_prefix if op == "#" else _strip_suffix
            return strip(value or "", pattern, longest)
        if op == "/":
            every = self._peek() == "/"
            if every:
                self.pos += 1
            pattern = self._word("/}")
            replacement = ""
            if self._peek() == "/":
                self.pos += 1
                replacement = self._word("}")
            self._close()
            return _replace(value or "", pattern, replacement, every)
        if op == ":":
            op += self._next()
        if op not in _MODIFIERS:
            raise InvalidArgument(f"unsupported modifier {op!r} in ${{{name}...}}")
        word = self._word("}")
        self._close()
        is_set, non_empty = value is not None, bool(value)
        present = non_empty if op.startswith(":") else is_set
        if op.endswith("-"):
            return value if present and value is not None else word
        if op.endswith("+"):
            return word if present else ""
        if not present:
            raise InvalidArgument(f"{name}: {word or 'is not set or empty'}")
        return value or ""


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word, quotes removed and variables expanded; whitespace is kept."""
    return "".join(_Lexer(word, env, False, escape).run().current)


def expand_heredoc(content: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """A heredoc body whose delimiter was not quoted (``COPY <<EOF``): variables expand,
    quotes and escapes stay as written (BuildKit expands with raw quotes and escapes,
    so ``\\$X`` stays ``\\$X`` and ``'$X'`` is not expanded)."""
    return "".join(_Lexer(content, env, False, escape, raw=True).run().current)


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Words split on unquoted whitespace, quotes removed, variables expanded."""
    out = _Lexer(text, env, True, escape).run()
    out.end()
    return out.words


def split_raw(text: str, *, escape: str = "\\") -> list[tuple[int, str]]:
    """Split on whitespace outside quotes, keeping quotes and escapes in the words;
    each word with its offset in ``text`` (for error columns)."""
    words: list[tuple[int, str]] = []
    start = -1
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                i += 1
        elif ch.isspace():
            if start >= 0:
                words.append((start, text[start:i]))
            start = -1
        else:
            if start < 0:
                start = i
            if ch in ("'", '"'):
                quote = ch
            elif ch == escape:
                i += 1
        i += 1
    if start >= 0:
        words.append((start, text[start:]))
    return words


def unclosed_quote(text: str, *, escape: str = "\\") -> int | None:
    """The offset of a quote that is never closed, or None."""
    opened = -1
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                i += 1
        elif ch in ("'", '"'):
            quote, opened = ch, i
        elif ch == escape:
            i += 1
        i += 1
    return opened if quote else None


def expand_pairs(
    pairs: tuple[tuple[str, str], ...], env: Mapping[str, str], *, escape: str = "\\"
) -> list[tuple[str, str]]:
    """``ENV``/``LABEL`` pairs expanded against ``env`` as it was *before* the
    instruction: ``ENV a=x b=$a`` gives ``b`` the old ``a`` (Dockerfile reference,
    "Environment replacement")."""
    snapshot = dict(env)
    return [
        (expand(key, snapshot, escape=escape), expand(value, snapshot, escape=escape))
        for key, value in pairs
    ]


def expand_at(location: Location, word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """:func:`expand`, with errors (``${X:?unset}``, a missing ``}``) raised as a
    :class:`ParseError` pointing at the instruction (and a :class:`LimitExceeded`
    naming it too)."""
    try:
        return expand(word, env, escape=escape)
    except InvalidArgument as exc:
        raise ParseError(location, exc.message) from exc
    except LimitExceeded as exc:
        raise limit_at(location, exc) from exc
