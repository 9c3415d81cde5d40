"""``COPY --chmod`` / ``ADD --chmod``: octal (``0755``) or symbolic (``u=rwX,go=rX``).

Octal modes replace the permission bits (and setuid/setgid/sticky when four digits say
so). Symbolic modes are chmod(1)'s, as BuildKit's Dockerfile 1.14 frontend takes them:
clauses ``[ugoa]*[+-=][rwxXst]*`` separated by commas, applied left to right to the
source file's own mode; ``X`` adds execute only to directories and to files that already
have an execute bit; no ``who`` means ``a`` (the umask plays no part in a build).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.errors import InvalidArgument

_CLAUSE = re.compile(r"([ugoa]*)([-+=])([rwxXst]+|[ugo]|)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


@dataclass(frozen=True, slots=True)
class ChmodSpec:
    """A parsed --chmod; :meth:`apply` gives the new mode of one file or directory."""

    text: str
    octal: int | None
    clauses: tuple[tuple[str, str, str], ...] = ()

    def apply(self, mode: int, is_dir: bool) -> int:
        """The permission bits (``0o7777``) for an object whose mode was ``mode``."""
        if self.octal is not None:
            return self.octal
        cur = mode & 0o7777
        for who, op, perms in self.clauses:
            cur = _apply_clause(cur, who or "a", op, perms, is_dir)
        return cur


def _apply_clause(cur: int, who: str, op: str, perms: str, is_dir: bool) -> int:
    mask = 0
    for w in who:
        mask |= 0o7777 if w == "a" else _WHO_BITS[w]
    if perms in ("u", "g", "o"):
        # copy the permissions of one class: "g=u"
        shift = {"u": 6, "g": 3, "o": 0}[perms]
        rwx = (cur >> shift) & 0o7
        bits = rwx << 6 | rwx << 3 | rwx
    else:
        bits = 0
        for p in perms:
            if p == "r":
                bits |= 0o444
            elif p == "w":
                bits |= 0o222
            elif p == "x":
                bits |= 0o111
            elif p == "X":
                if is_dir or cur & 0o111:
                    bits |= 0o111
            elif p == "s":
                bits |= 0o6000
            elif p == "t":
                bits |= 0o1000
    bits &= mask
    if op == "+":
        return cur | bits
    if op == "-":
        return cur & ~bits
    # "=": clear the class's rwx (and its special bit), then set
    return (cur & ~mask) | bits


def parse_chmod(text: str) -> ChmodSpec:
    """Parse a --chmod value; InvalidArgument names what is wrong."""
    spec = text.strip()
    if not spec:
        raise InvalidArgument(
            "--chmod needs a mode", hint="use --chmod=0755 or --chmod=u=rwX,go=rX"
        )
    if spec.isascii() and spec.isdigit():
        if any(c in "89" for c in spec) or len(spec) > 4:
            raise InvalidArgument(
                f"invalid --chmod {text!r}: not an octal mode", hint="use up to four octal digits"
            )
        return ChmodSpec(text, int(spec, 8))
    clauses: list[tuple[str, str, str]] = []
    for part in spec.split(","):
        # one clause may chain operators: "u+r-w" is "u+r,u-w"
        m = re.fullmatch(r"([ugoa]*)((?:[-+=](?:[rwxXst]+|[ugo]|))+)", part)
        if m is None:
            raise InvalidArgument(
                f"invalid --chmod {text!r}: cannot read {part!r}",
                hint="use octal (0755) or symbolic clauses like u=rwX,go=rX",
            )
        who = m.group(1)
        for op_m in _CLAUSE.finditer(who + m.group(2)):
            clauses.append((who, op_m.group(2), op_m.group(3)))
    return ChmodSpec(text, None, tuple(clauses))
