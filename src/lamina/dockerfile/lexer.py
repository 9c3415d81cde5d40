"""Physical lines to logical instruction lines: parser directives, comments, line
continuations and heredoc bodies (Dockerfile reference, "Parser directives", "Format",
"Here-Documents"). Every logical line keeps a map back to file positions so that
errors can point at the exact ``line:column``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lamina.dockerfile.instructions import Heredoc, Location, ParseError
from lamina.dockerfile.words import split_raw

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]+)$")
# Only these instructions take heredocs (BuildKit 1.4+).
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One instruction: its text with continuations joined, and a map from offsets in
    ``text`` to (line, column) in the file."""

    file: str
    text: str
    segments: tuple[tuple[int, int, int], ...]  # (offset in text, line, column of offset)
    heredocs: tuple[Heredoc, ...] = ()

    def location(self, offset: int) -> Location:
        line, column = self.segments[0][1], self.segments[0][2]
        for start, seg_line, seg_col in self.segments:
            if start > offset:
                break
            line, column = seg_line, seg_col + (offset - start)
        return Location(self.file, line, column)

    def tail(self, start: int) -> LogicalLine:
        """The text from ``start`` on, positions kept."""
        first = self.location(start)
        rest = tuple((o - start, ln, col) for o, ln, col in self.segments if o > start)
        return LogicalLine(
            self.file, self.text[start:], ((0, first.line, first.column), *rest), self.heredocs
        )


@dataclass(frozen=True, slots=True)
class Lexed:
    directives: tuple[tuple[str, str], ...]
    escape: str
    lines: tuple[LogicalLine, ...]


def _directives(file: str, physical: list[str]) -> tuple[list[tuple[str, str]], str, int]:
    """Directives are recognised only at the very top, before any comment, blank line
    or instruction; an unknown one ends them (it is a comment)."""
    found: list[tuple[str, str]] = []
    escape = "\\"
    index = 0
    for index, line in enumerate(physical):
        m = _DIRECTIVE.match(line.strip())
        if not m or m.group(1).lower() not in _KNOWN_DIRECTIVES:
            return found, escape, index
        name, value = m.group(1).lower(), m.group(2)
        where = Location(file, index + 1, line.index("#") + 1)
        if any(k == name for k, _ in found):
            raise ParseError(where, f"only one {name!r} parser directive can be used")
        if name == "escape":
            if value not in ("\\", "`"):
                raise ParseError(
                    where,
                    f"invalid escape token {value!r} does not match ` or \\",
                    hint="write '# escape=\\' or '# escape=`'",
                )
            escape = value
        found.append((name, value))
    return found, escape, len(physical)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _strip_continuation(line: str, escape: str) -> tuple[str, bool]:
    """(line without the trailing escape, whether the instruction continues). An escape
    that is itself escaped (``\\\\`` at the end) does not continue the line; only
    spaces and tabs may follow the escape."""
    stripped = line.rstrip(" \t")
    if stripped == escape:
        return "", True
    if stripped.endswith(escape) and not stripped.endswith(escape * 2):
        return stripped[: -len(escape)], True
    return line, False


def _takes_heredocs(text: str) -> bool:
    """RUN, COPY and ADD (also as an ONBUILD trigger), not in JSON form."""
    keyword, _, rest = text.strip().partition(" ")
    if keyword.upper() == "ONBUILD":
        keyword, _, rest = rest.strip().partition(" ")
    if keyword.upper() not in HEREDOC_INSTRUCTIONS:
        return False
    rest = rest.strip()
    while rest.startswith("--"):  # flags come before a JSON form
        rest = rest.partition(" ")[2].strip()
    return not _is_json_array(rest)


def _is_json_array(text: str) -> bool:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return False
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _heredoc_markers(text: str, escape: str) -> list[tuple[int, str, bool, bool, int | None]]:
    """``<<NAME`` words of the line: (offset, name, expand, chomp, fd). A quote anywhere
    in the delimiter word turns expansion of the body off (reference, "Here-Documents")."""
    markers = []
    for offset, word in split_raw(text, escape=escape):
        m = _HEREDOC_WORD.match(word)
        if not m:
            continue
        raw_name = m.group(3)
        name = _unquote(raw_name, escape)
        if not name or any(ch.isspace() for ch in name):
            continue
        fd = int(m.group(1)) if m.group(1) else None
        quoted = any(q in raw_name for q in "'\"")
        markers.append((offset, name, not quoted, m.group(2) == "-", fd))
    return markers


def _unquote(word: str, escape: str) -> str:
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(word):
        ch = word[i]
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in ("'", '"'):
            quote = ch
        elif ch == escape and quote != "'" and i + 1 < len(word):
            i += 1
            out.append(word[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def lex(source: str, file: str = "Dockerfile") -> Lexed:
    """Directives, then one :class:`LogicalLine` per instruction: blank and comment lines
    skipped, continuations joined (comment and blank lines inside them dropped),
    heredoc bodies of RUN/COPY/ADD (and ONBUILD of those) attached."""
    if source.startswith("\ufeff"):
        source = source[1:]
    # Lines end at "\n" (a "\r" before it is dropped), as Go's bufio.ScanLines does;
    # str.splitlines would also split on \x0c, \x85, \u2028 and miscount lines.
    split = source.split("\n")
    crlf = [line.endswith("\r") for line in split]
    physical = [line.removesuffix("\r") for line in split]
    if physical and physical[-1] == "":
        physical.pop()
    directives, escape, i = _directives(file, physical)
    lines: list[LogicalLine] = []
    while i < len(physical):
        raw = physical[i]
        i += 1
        if not raw.strip() or _is_comment(raw):
            continue
        indent = len(raw) - len(raw.lstrip())
        text, more = _strip_continuation(raw[indent:], escape)
        segments = [(0, i, indent + 1)]
        while more and i < len(physical):
            raw = physical[i]
            i += 1
            if _is_comment(raw) or not raw.strip():
                continue  # dropped inside a continuation (reference, "Format")
            segments.append((len(text), i, 1))
            part, more = _strip_continuation(raw, escape)
            text += part
        if not text.strip():
            continue  # only continuations and comments: nothing to parse
        lead = len(text) - len(text.lstrip())
        if lead:  # the instruction starts on a continuation line
            shifted = LogicalLine(file, text, tuple(segments)).tail(lead)
            text, segments = shifted.text, list(shifted.segments)
        heredocs: list[Heredoc] = []
        if "<<" in text and _takes_heredocs(text):
            logical = LogicalLine(file, text, tuple(segments))
            for offset, name, expand, chomp, fd in _heredoc_markers(text, escape):
                body: list[str] = []
                while True:
                    if i >= len(physical):
                        raise ParseError(
                            logical.location(offset),
                            f"unterminated heredoc {name!r}",
                            hint=f"end it with a line holding only {name}",
                        )
                    line = physical[i]
                    ending = "\r\n" if crlf[i] else "\n"  # bodies keep their line endings
                    i += 1
                    if chomp:
                        line = line.lstrip("\t")
                    if line == name:
                        break
                    body.append(line + ending)
                heredocs.append(Heredoc(name, "".join(body), expand, chomp, fd))
        lines.append(LogicalLine(file, text, tuple(segments), tuple(heredocs)))
    return Lexed(tuple(directives), escape, tuple(lines))
