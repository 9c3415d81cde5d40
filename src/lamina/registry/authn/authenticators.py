"""The two :class:`~lamina.registry.authn.api.Authenticator` implementations: Basic
against an htpasswd file, and Bearer tokens from the built-in issuer.

Challenges follow distribution: ``Basic realm="…"`` for htpasswd;
``Bearer realm="…",service="…",scope="…"`` naming exactly the needed scopes for token
auth, with ``error="invalid_token"`` for a token that does not verify and
``error="insufficient_scope"`` for one that verifies but does not grant enough (the
client then asks the issuer for a better one).
"""

from __future__ import annotations

import hashlib
import threading
import time

from lamina.registry.authn.api import Identity, TokenIssuer
from lamina.registry.authn.basic import basic_refusal, basic_user
from lamina.registry.authn.htpasswd import Htpasswd
from lamina.registry.authn.issuer import BuiltinTokenIssuer
from lamina.registry.authn.policy import Policy
from lamina.registry.authn.tokens import Claims, InvalidToken
from lamina.registry.challenges import (
    Scope,
    allows,
    bearer_challenge,
    parse_authorization,
    unauthorized,
)
from lamina.registry.errors import RegistryError

_VERIFIED_MAX = 4096  # remembered tokens; a token lives minutes


class BasicAuthenticator:
    """HTTP Basic against a bcrypt htpasswd file (RFC 7617), with ``policy`` deciding
    what each user may do. Anonymous requests pass only where the policy lets them
    pull; an authenticated user the policy refuses gets 403 DENIED."""

    def __init__(self, users: Htpasswd, policy: Policy, *, realm: str) -> None:
        self.issuer: TokenIssuer | None = None
        self.users = users
        self.policy = policy
        self.realm = realm

    def authenticate(self, authorization: str | None, needed: tuple[Scope, ...]) -> Identity:
        user = basic_user(authorization, self.users, self.realm, taker="this registry")
        if user is None:
            granted = self.policy.grant(None, needed)
            if self.policy.anonymous and allows(granted, needed):
                return Identity(None, granted)
            raise basic_refusal(self.realm, "authentication required")
        granted = self.policy.grant(user, needed)
        if not allows(granted, needed):
            raise RegistryError(
                "DENIED",
                f"{user!r} may not {' '.join(str(s) for s in needed)}",
                detail=[
                    {"type": s.type, "name": s.name, "actions": list(s.actions)} for s in needed
                ],
            )
        return Identity(user, granted)


class TokenAuthenticator:
    """Bearer tokens signed by :attr:`issuer`'s key, for its service (distribution's
    token access controller). Every refusal is a 401 whose challenge sends the client
    to the issuer for exactly the needed scopes."""

    def __init__(self, issuer: BuiltinTokenIssuer) -> None:
        self.token_issuer = issuer
        self.issuer: TokenIssuer | None = issuer  # the contract's view of it
        # A client sends the same token with every request until it expires: checking
        # the signature once (~0.1-1 ms of ECDSA and JSON here) is enough. Keyed by the
        # token's SHA-256; expiry is still checked on every use.
        self._verified: dict[bytes, Claims] = {}
        self._lock = threading.Lock()

    def _verify(self, token: str) -> Claims:
        codec = self.token_issuer.codec
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        claims = self._verified.get(key)
        if claims is not None and time.time() <= claims.expires + codec.leeway:
            return claims
        claims = codec.verify(token)
        with self._lock:
            if len(self._verified) >= _VERIFIED_MAX:
                now = time.time()
                live = {k: c for k, c in self._verified.items() if now <= c.expires}
                self._verified = live if len(live) < _VERIFIED_MAX // 2 else {}
            self._verified[key] = claims
        return claims

    def _challenge(
        self, needed: tuple[Scope, ...], message: str, error: str | None = None
    ) -> RegistryError:
        header = bearer_challenge(
            self.token_issuer.realm, self.token_issuer.codec.service, needed, error
        )
        return unauthorized(header, message)

    def authenticate(self, authorization: str | None, needed: tuple[Scope, ...]) -> Identity:
        try:
            parsed = parse_authorization(authorization)
        except RegistryError as exc:
            raise self._challenge(needed, exc.message) from exc
        if parsed is None or parsed[0] != "bearer":
            raise self._challenge(needed, "a bearer token is required")
        try:
            claims = self._verify(parsed[1])
        except InvalidToken as exc:
            raise self._challenge(needed, exc.message, "invalid_token") from exc
        if not allows(claims.access, needed):
            raise self._challenge(
                needed, "the token does not grant the needed access", "insufficient_scope"
            )
        return Identity(claims.subject or None, claims.access)
