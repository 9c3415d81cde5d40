"""The contract between the registry server and its authentication.

Flow (distribution's "Token Authentication Specification"): the server computes the
scopes a request needs (``lamina.registry.challenges.required_scopes``) and calls
:meth:`Authenticator.authenticate` with the request's ``Authorization`` header. The
authenticator answers with the identity it accepted, or raises a
:class:`~lamina.registry.errors.RegistryError`:

- ``UNAUTHORIZED`` (401) whose ``headers`` carry ``WWW-Authenticate`` (``Basic realm=…``
  for htpasswd; ``Bearer realm=…,service=…,scope=…`` naming exactly the needed scopes
  for token auth) when credentials are missing, malformed, wrong, expired, or when a
  token does not grant the needed scopes (the client then fetches a better token);
- ``DENIED`` (403) when the identity is known but may never do this.

The base check ``GET /v2/`` needs no scope, only authentication (``needed == ()``).

With token auth the server also serves :attr:`Authenticator.issuer` at its
``path`` (``GET /token``): the client sends Basic credentials (or none, for anonymous
pull where allowed), ``service`` and one or more ``scope`` parameters; the issuer grants
the intersection of what was asked and what the user may do, and returns the JSON body
``{"token", "access_token", "expires_in", "issued_at"}``. A token grants only the scopes
written in its ``access`` claim: a pull token for ``a`` can neither push to ``a`` nor pull
from ``b``.

Both calls are blocking (bcrypt is deliberately slow): the server runs them in an
executor. Implementations are thread safe and keep no per-request state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lamina.registry.challenges import Scope


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request was accepted as; ``user`` is None for an anonymous request that
    the configuration lets through (no auth configured, or anonymous pull)."""

    user: str | None
    granted: tuple[Scope, ...] = ()


class TokenIssuer(Protocol):
    path: str  # where the server mounts it, e.g. "/token"

    def issue(
        self, authorization: str | None, service: str | None, scopes: tuple[str, ...]
    ) -> dict[str, Any]:
        """The token response body; raises RegistryError UNAUTHORIZED on bad credentials."""
        ...


class Authenticator(Protocol):
    issuer: TokenIssuer | None  # set for token auth: the server serves it

    def authenticate(self, authorization: str | None, needed: tuple[Scope, ...]) -> Identity:
        """The accepted identity, or RegistryError UNAUTHORIZED (with the challenge in
        ``headers``) / DENIED."""
        ...
