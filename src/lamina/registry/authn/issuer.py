"""The built-in token issuer (distribution's "Token Authentication Specification",
"Requesting a Token"): ``GET /token?service=S&scope=repository:a:pull,push`` with Basic
credentials, or none for anonymous pull where the policy allows it.

The issuer grants the intersection of what was asked and what the policy lets the
user have; it never fails because a scope is not allowed, it leaves that scope out
(the registry then answers ``insufficient_scope``). Bad credentials are a 401 with a
Basic challenge, since the token endpoint itself speaks Basic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lamina.registry.authn.basic import basic_refusal, basic_user
from lamina.registry.authn.htpasswd import Htpasswd
from lamina.registry.authn.policy import Policy
from lamina.registry.authn.tokens import TokenCodec
from lamina.registry.challenges import Scope, parse_scopes
from lamina.registry.errors import RegistryError

_SCOPES_MAX = 32  # scope parameters per request; a push with mounts needs a few


class BuiltinTokenIssuer:
    """Issues tokens signed by ``codec`` to the users of ``users`` (None: anonymous
    only), as far as ``policy`` allows. Thread safe; bcrypt runs in :meth:`issue`, so
    callers on an event loop run it in a thread."""

    def __init__(
        self,
        codec: TokenCodec,
        users: Htpasswd | None,
        policy: Policy,
        *,
        realm: str,
        path: str = "/token",
    ) -> None:
        self.codec = codec
        self.users = users
        self.policy = policy
        self.realm = realm
        self.path = path

    def authenticate(self, authorization: str | None) -> str | None:
        """The user the Basic credentials name (None: anonymous); 401 when wrong."""
        return basic_user(authorization, self.users, self.realm, taker="the token endpoint")

    def issue(
        self, authorization: str | None, service: str | None, scopes: tuple[str, ...]
    ) -> dict[str, Any]:
        if service is not None and service != self.codec.service:
            raise RegistryError(
                "DENIED",
                f"this issuer serves {self.codec.service!r}, not {service[:100]!r}",
                hint="ask the token for the service named in the registry's challenge",
            )
        if len(scopes) > _SCOPES_MAX:
            raise RegistryError("DENIED", f"at most {_SCOPES_MAX} scope parameters", status=400)
        requested = _merge(tuple(s for text in scopes for s in parse_scopes(text)))
        if len(requested) > _SCOPES_MAX:
            raise RegistryError("DENIED", f"at most {_SCOPES_MAX} resources per token", status=400)
        user = self.authenticate(authorization)
        if user is None and not self.policy.anonymous:
            raise basic_refusal(self.realm, "this registry needs credentials")
        granted = self.policy.grant(user, requested)
        token, issued, expires_in = self.codec.sign(user or "", granted)
        stamp = datetime.fromtimestamp(issued, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": stamp,
        }


def _merge(scopes: tuple[Scope, ...]) -> tuple[Scope, ...]:
    """One scope per resource, its actions the union asked for (in asked order):
    clients repeat a repository when they mount from it and push to it."""
    merged: dict[tuple[str, str], list[str]] = {}
    for s in scopes:
        acts = merged.setdefault((s.type, s.name), [])
        acts.extend(a for a in s.actions if a not in acts)
    return tuple(Scope(name, tuple(acts), kind) for (kind, name), acts in merged.items())
