"""The 401 -> challenge -> credentials or token -> retry dance (Docker "Token
Authentication Specification"; RFC 7617 for Basic).

A request goes out with whatever :meth:`AuthFlow.authorization` has for its registry
and scopes (nothing the first time). On a 401 the transport hands the response's
``WWW-Authenticate`` to :meth:`AuthFlow.challenged`, which

- for ``Basic``: remembers the scheme and answers the saved credentials (refusing,
  with a hint to log in, when there are none);
- for ``Bearer``: asks the challenge's ``realm`` for a token,
  ``GET realm?service=S&scope=A&scope=B`` with Basic credentials when there are
  some (anonymous otherwise), and caches it per (registry, scope set) until it
  expires;

and the transport retries once. A second 401 means the credentials are wrong.

Credentials go to the registry's origin (the transport sees to that) and to the realm
its challenge names, which for a registry reached over verified TLS must be ``https``:
a plain-http realm gets them only when the registry is insecure itself (loopback, or
``--insecure``). A token for one registry is sent to that registry's origin only.
Tokens are requested once per key even when many transfers hit the 401 at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ssl import SSLContext
from typing import TYPE_CHECKING

from lamina.errors import ToolError
from lamina.registry.challenges import Challenge, Scope, basic_authorization, parse_challenges
from lamina.registry.client.credentials import Credentials

if TYPE_CHECKING:
    import aiohttp
from lamina.registry.errors import RegistryError

CredentialLookup = Callable[[str], Credentials | None]

_TOKEN_MAX = 1 << 20
# Docker's token spec: "if expires_in is not given, assume 60 seconds".
_DEFAULT_EXPIRY = 60
_EXPIRY_MARGIN = 10


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires: float  # time.monotonic() deadline


def scope_key(scopes: Iterable[Scope]) -> tuple[str, ...]:
    return tuple(sorted({str(s) for s in merge_scopes(scopes)}))


def merge_scopes(scopes: Iterable[Scope]) -> tuple[Scope, ...]:
    """One scope per (type, name), with the union of the actions (pull before push)."""
    merged: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        actions = merged.setdefault((scope.type, scope.name), [])
        actions.extend(a for a in scope.actions if a not in actions)
    order = {"pull": 0, "push": 1, "delete": 2}
    return tuple(
        Scope(name, tuple(sorted(actions, key=lambda a: (order.get(a, 3), a))), kind)
        for (kind, name), actions in merged.items()
    )


def _login_hint(registry: str) -> str:
    return f"log in with `lamina login {registry}` (or pass --authfile)"


class AuthFlow:
    """Per-registry challenge memory and per-scope token cache (one per Transport)."""

    def __init__(self, credentials: CredentialLookup) -> None:
        self._credentials = credentials
        self._schemes: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._locks: dict[tuple[str, tuple[str, ...]], asyncio.Lock] = {}
        self._creds_cache: dict[str, Credentials | None] = {}

    def credentials(self, registry: str) -> Credentials | None:
        if registry not in self._creds_cache:
            self._creds_cache[registry] = self._credentials(registry)
        return self._creds_cache[registry]

    def authorization(self, registry: str, scopes: Iterable[Scope]) -> str | None:
        """The Authorization value to send now (None: send none)."""
        challenge = self._schemes.get(registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials(registry)
            return basic_authorization(creds.username, creds.password) if creds else None
        token = self._tokens.get((registry, scope_key(scopes)))
        if token is not None and token.expires > time.monotonic():
            return f"Bearer {token.value}"
        return None

    async def challenged(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        header: str | None,
        scopes: Iterable[Scope],
        ssl: SSLContext | bool,
        *,
        insecure: bool = False,
    ) -> str:
        """Answer a 401: the Authorization value to retry with (or raise). ``insecure``:
        the registry itself is reached without verified TLS (loopback, or asked for),
        so a plain-http token realm may see the credentials too."""
        if not header:
            raise RegistryError(
                "UNAUTHORIZED",
                f"{registry} answered 401 without a WWW-Authenticate challenge",
                hint=_login_hint(registry),
            )
        wanted = tuple(scopes)
        challenges = parse_challenges(header)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None)
        chosen = chosen or next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            raise RegistryError(
                "UNAUTHORIZED",
                f"{registry} asks for {challenges[0].scheme} auth, which lamina does not speak",
                hint="use a registry with Basic or Bearer (token) auth",
            )
        self._schemes[registry] = chosen
        creds = self.credentials(registry)
        if chosen.scheme == "basic":
            if creds is None:
                raise RegistryError(
                    "UNAUTHORIZED",
                    f"{registry} requires authentication",
                    hint=_login_hint(registry),
                )
            return basic_authorization(creds.username, creds.password)
        # The challenge's own scopes say what the registry wants for this request; ask
        # for those and ours together (a mount also needs pull on the source repo).
        every = (*wanted, *chosen.scopes)
        key = (registry, scope_key(wanted))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires > time.monotonic():
                return f"Bearer {cached.value}"
            token = await self._fetch_token(
                session=session,
                registry=registry,
                challenge=chosen,
                scopes=every,
                creds=creds,
                ssl=ssl,
                insecure=insecure,
            )
            self._tokens[key] = token
            return f"Bearer {token.value}"

    async def _fetch_token(
        self,
        *,
        session: aiohttp.ClientSession,
        registry: str,
        challenge: Challenge,
        scopes: tuple[Scope, ...],
        creds: Credentials | None,
        ssl: SSLContext | bool,
        insecure: bool,
    ) -> _Token:
        from lamina.http.tls import aiohttp

        realm = challenge.realm
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryError(
                "UNAUTHORIZED",
                f"{registry}'s Bearer challenge has no usable realm ({realm!r})",
                hint="the registry's token auth is misconfigured",
            )
        if creds is not None and realm.startswith("http://") and not insecure:
            # the password would cross the network in the clear (RFC 7617 section 4)
            raise RegistryError(
                "UNAUTHORIZED",
                f"{registry}'s token realm {realm} is plain http; lamina sends credentials "
                "to a token server only over TLS",
                hint=f"fix the registry's auth configuration, or pass --insecure if "
                f"you trust the network to {registry}",
            )
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in scope_key(scopes))
        headers: dict[str, str] = {}
        if creds is not None:
            params.append(("account", creds.username))
            headers["Authorization"] = basic_authorization(creds.username, creds.password)
        try:
            async with session.get(realm, params=params, headers=headers, ssl=ssl) as resp:
                body = await resp.content.read(_TOKEN_MAX + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ToolError(
                f"cannot reach the token server {realm} of {registry}: {exc}",
                hint="check the network, or the registry's auth configuration",
            ) from exc
        if status in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise RegistryError(
                "UNAUTHORIZED",
                f"the token server of {registry} refused {who}",
                hint=_login_hint(registry),
            )
        if status != 200 or len(body) > _TOKEN_MAX:
            raise ToolError(f"the token server {realm} answered {status}")
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ToolError(f"the token server {realm} sent a body that is not JSON") from exc
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise ToolError(f"the token server {realm} sent no token")
        expires_in = doc.get("expires_in")
        if type(expires_in) is not int or expires_in <= 0:
            expires_in = _DEFAULT_EXPIRY
        deadline = time.monotonic() + max(expires_in - _EXPIRY_MARGIN, 1)
        return _Token(value, deadline)
