"""Dockerfile word processing: quotes, escapes and ``$VAR`` expansion.

What Docker's builder does to the arguments of ENV, LABEL, EXPOSE, USER, VOLUME,
WORKDIR and STOPSIGNAL before using them (Dockerfile reference, "Environment
replacement"): ``'...'`` is literal; in ``"..."`` a backslash escapes only ``"``, ``$``
and ``\\``; outside quotes a backslash escapes any character; ``$name`` and
``${name}`` expand, with ``${name:-word}``, ``${name-word}``, ``${name:+word}``,
``${name+word}``, ``${name:?word}`` and ``${name?word}``. Unset variables expand to
nothing. :func:`split_words` also splits on unquoted whitespace, including whitespace
that came out of an unquoted expansion (so ``EXPOSE $PORTS`` may expose several).

Also :func:`split_quoted`, the Dockerfile parser's splitting of ``k=v "k 2"="v 2"``
into words that keep their quotes for the processing above.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.errors import InvalidArgument

ESCAPE = "\\"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class _Words:
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
    __slots__ = ("env", "pos", "split", "text")

    def __init__(self, text: str, env: Mapping[str, str], split: bool) -> None:
        self.text, self.env, self.split, self.pos = text, env, split, 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def run(self, stop: str = "") -> _Words:
        out = _Words()
        while self.pos < len(self.text):
            ch = self._peek()
            if stop and ch == stop:
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
            elif ch == ESCAPE:
                if self.pos < len(self.text):  # a backslash at the very end is dropped
                    out.raw(self._next())
            elif self.split and ch.isspace():
                out.end()
            else:
                out.raw(ch)
        return out

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end == -1:
            raise InvalidArgument("unexpected end of text looking for a closing single quote")
        value, self.pos = self.text[self.pos : end], end + 1
        return value

    def _double_quoted(self) -> str:
        parts: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise InvalidArgument("unexpected end of text looking for a closing double quote")
            ch = self._next()
            if ch == '"':
                return "".join(parts)
            if ch == "$":
                parts.append(self._dollar())
            elif ch == ESCAPE and self._peek() in ('"', "$", ESCAPE):
                parts.append(self._next())
            elif ch == ESCAPE and not self._peek():
                continue
            else:
                parts.append(ch)

    def _name(self) -> str:
        start = self.pos
        while self._peek() and self._peek() in _NAME_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def _dollar(self) -> str:
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
        if op == ":":
            op += self._next()
        if op not in (":-", "-", ":+", "+", ":?", "?"):
            raise InvalidArgument(f"unsupported modifier {op!r} in ${{{name}...}}")
        # The word after the modifier is one word even when splitting; its expansion
        # is split (or not) with the rest of the value by the caller.
        saved, self.split = self.split, False
        try:
            word = "".join(self.run(stop="}").current)
        finally:
            self.split = saved
        if self._next() != "}":
            raise InvalidArgument(f"missing '}}' in {self.text!r}")
        value = self.env.get(name)
        is_set, non_empty = value is not None, bool(value)
        present = non_empty if op.startswith(":") else is_set
        if op.endswith("-"):
            return value if present and value is not None else word
        if op.endswith("+"):
            return word if present else ""
        if not present:
            raise InvalidArgument(f"{name}: {word or 'is not set or empty'}")
        return value or ""


def process_word(text: str, env: Mapping[str, str]) -> str:
    """One word, quotes removed and variables expanded; whitespace is kept."""
    words = _Lexer(text, env, split=False).run()
    return "".join(words.current)


def split_words(text: str, env: Mapping[str, str]) -> list[str]:
    """Words split on unquoted whitespace, quotes removed, variables expanded."""
    words = _Lexer(text, env, split=True).run()
    words.end()
    return words.words


def split_quoted(text: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes in the words (the
    Dockerfile parser's first pass over ``ENV``/``LABEL`` arguments)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            elif ch == ESCAPE and quote != "'" and i + 1 < len(text):
                i += 1
                current.append(text[i])
        elif ch.isspace():
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            started = True
            if ch in ("'", '"'):
                quote = ch
                current.append(ch)
            elif ch == ESCAPE:
                if i + 1 < len(text):
                    current.append(ch)
                    i += 1
                    current.append(text[i])
            else:
                current.append(ch)
        i += 1
    if started:
        words.append("".join(current))
    return words
