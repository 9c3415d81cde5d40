"""Auth challenges, credentials headers and scopes, both ends, pure (Docker token auth
spec "Token Authentication Specification", RFC 9110 section 11 for the challenge
grammar, RFC 7617 for Basic). Who may do what is :mod:`lamina.registry.authn`'s.

The server builds ``WWW-Authenticate`` values and asks :func:`required_scopes` what a
route needs; the client parses challenges and formats the scopes it asks a token for.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lamina.registry import routes as r
from lamina.registry.errors import RegistryError

PULL = "pull"
PUSH = "push"
DELETE = "delete"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_RE = re.compile(_TOKEN)
_PARAM_RE = re.compile(
    rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|"((?:[^"\\]|\\.)*)")[ \t]*', re.S
)
_ACTION_RE = re.compile(r"[a-z*]+")


@dataclass(frozen=True, slots=True)
class Scope:
    """``type:name:action[,action]``, e.g. ``repository:library/busybox:pull,push``."""

    name: str
    actions: tuple[str, ...]
    type: str = "repository"

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @classmethod
    def parse(cls, text: str) -> Scope:
        # The name may itself hold a colon (a host:port prefix), so split at the first
        # colon for the type and at the last for the actions.
        kind, sep1, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep1 and sep2 and kind and name):
            raise RegistryError(
                "UNAUTHORIZED",
                f"malformed scope {text[:200]!r}",
                status=400,
                hint="a scope looks like repository:<name>:pull,push",
            )
        acts = tuple(a for a in actions.split(",") if a)
        if not acts or not all(_ACTION_RE.fullmatch(a) for a in acts):
            raise RegistryError(
                "UNAUTHORIZED", f"malformed scope actions {actions[:80]!r}", status=400
            )
        return cls(name, acts, kind)


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Scopes from a token request's ``scope`` value(s), space-separated."""
    return tuple(Scope.parse(part) for part in text.split())


def _quote(value: str) -> str:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise RegistryError("UNAUTHORIZED", "control character in a challenge parameter")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    realm: str,
    service: str,
    scopes: tuple[Scope, ...] = (),
    error: str | None = None,
) -> str:
    """``Bearer realm="...",service="...",scope="repository:n:pull,push"``."""
    parts = [f"realm={_quote(realm)}", f"service={_quote(service)}"]
    if scopes:
        parts.append(f"scope={_quote(' '.join(str(s) for s in scopes))}")
    if error:
        parts.append(f"error={_quote(error)}")
    return "Bearer " + ",".join(parts)


def basic_challenge(realm: str) -> str:
    return f'Basic realm={_quote(realm)},charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed challenge: its scheme (lowercased) and parameters (names lowercased)."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[Scope, ...]:
        raw = self.params.get("scope")
        return parse_scopes(raw) if raw else ()


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted, flags=re.S)


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value (RFC 9110 11.6.1 grammar; token68
    credentials are not used by registries and end the parse). Malformed -> UNAUTHORIZED."""
    out: list[Challenge] = []
    pos, n = 0, len(header)
    while pos < n:
        while pos < n and header[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        m = _TOKEN_RE.match(header, pos)
        if m is None:
            raise RegistryError("UNAUTHORIZED", f"malformed challenge {header[:200]!r}")
        scheme = m[0].lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < n:
            p = _PARAM_RE.match(header, pos)
            if p is None:
                break
            params[p[1].lower()] = p[2] if p[2] is not None else _unquote(p[3])
            pos = p.end()
            if pos < n and header[pos] == ",":
                # a comma ends this parameter; the next item is a parameter or a scheme
                pos += 1
                continue
            break
        out.append(Challenge(scheme, params))
        if pos < n and header[pos] not in " \t,":
            raise RegistryError("UNAUTHORIZED", f"malformed challenge {header[:200]!r}")
    if not out:
        raise RegistryError("UNAUTHORIZED", "empty WWW-Authenticate header")
    return out


def parse_challenge(header: str) -> Challenge:
    """The first challenge of a ``WWW-Authenticate`` value."""
    return parse_challenges(header)[0]


_WRITE = {r.UPLOAD_START, r.UPLOAD_MONOLITHIC, r.UPLOAD_PATCH, r.UPLOAD_FINISH}
_WRITE |= {r.UPLOAD_STATUS, r.UPLOAD_CANCEL, r.UPLOAD_MOUNT, r.MANIFEST_PUT}


def required_scopes(route: r.Route) -> tuple[Scope, ...]:
    """What a token must grant for ``route``; ``()`` for the base check (which needs
    only authentication) and ``registry:catalog:*`` for the catalog."""
    if route.endpoint == r.BASE:
        return ()
    if route.endpoint == r.CATALOG:
        return (Scope("catalog", ("*",), "registry"),)
    assert route.name is not None  # every other endpoint has a validated name
    if route.endpoint in (r.MANIFEST_DELETE, r.BLOB_DELETE):
        return (Scope(route.name, (DELETE,)),)
    if route.endpoint in _WRITE:
        need: tuple[Scope, ...] = (Scope(route.name, (PULL, PUSH)),)
        if route.endpoint == r.UPLOAD_MOUNT and route.mount_from:
            need += (Scope(route.mount_from, (PULL,)),)
        return need
    return (Scope(route.name, (PULL,)),)


def required_scope(route: r.Route) -> tuple[str, tuple[str, ...]] | None:
    """The repository and actions ``route`` needs on its own repository (None for the
    base check and the catalog)."""
    for scope in required_scopes(route):
        if scope.type == "repository" and scope.name == route.name:
            return scope.name, scope.actions
    return None


def allows(granted: Iterable[Scope], needed: Iterable[Scope]) -> bool:
    """True when every needed scope is covered by a granted one of the same type and
    name (``*`` grants every action). A pull grant never covers push or another repo."""
    have: dict[tuple[str, str], set[str]] = {}
    for g in granted:
        have.setdefault((g.type, g.name), set()).update(g.actions)
    for need in needed:
        acts = have.get((need.type, need.name), set())
        if "*" not in acts and not set(need.actions) <= acts:
            return False
    return True


def unauthorized(challenge: str, message: str | None = None) -> RegistryError:
    """A 401 carrying ``WWW-Authenticate``."""
    return RegistryError("UNAUTHORIZED", message, headers={"WWW-Authenticate": challenge})


def basic_authorization(username: str, password: str) -> str:
    """An ``Authorization: Basic ...`` value (RFC 7617, UTF-8)."""
    if ":" in username:
        raise RegistryError("UNAUTHORIZED", "a Basic auth user name cannot hold ':'", status=400)
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_authorization(header: str | None) -> tuple[str, str, str] | None:
    """``(scheme, user_or_token, password)`` from an ``Authorization`` value: for Basic
    the user and password, for Bearer the token and ``""``; None when absent. A
    malformed value is a 401 (the server then answers with its challenge)."""
    if header is None:
        return None
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    kind = scheme.lower()
    if kind == "basic" and rest:
        try:
            raw = base64.b64decode(rest, validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise RegistryError("UNAUTHORIZED", "malformed Basic credentials") from exc
        user, sep, password = raw.partition(":")
        if not sep:
            raise RegistryError("UNAUTHORIZED", "Basic credentials lack ':'")
        return "basic", user, password
    if kind == "bearer" and rest and " " not in rest:
        return "bearer", rest, ""
    raise RegistryError("UNAUTHORIZED", f"unsupported Authorization scheme {scheme[:20]!r}")
