"""Who may do what on the registry: htpasswd (bcrypt) basic auth and Docker token auth
(a built-in issuer signing JWTs). The server asks an :class:`~.api.Authenticator`;
:func:`open_authenticator` picks one from the ``registry serve`` options."""

from __future__ import annotations

from lamina.errors import InvalidArgument
from lamina.registry.authn.api import Authenticator, Identity, TokenIssuer
from lamina.registry.authn.authenticators import BasicAuthenticator, TokenAuthenticator
from lamina.registry.authn.htpasswd import Htpasswd, hash_password, set_password, write_htpasswd
from lamina.registry.authn.issuer import BuiltinTokenIssuer
from lamina.registry.authn.policy import DEFAULT_POLICY, Policy, Rule, load_policy
from lamina.registry.authn.tokens import TOKEN_TTL, SigningKey, TokenCodec, load_key
from lamina.registry.challenges import bearer_challenge
from lamina.registry.errors import RegistryError

__all__ = [
    "DEFAULT_POLICY",
    "Authenticator",
    "BasicAuthenticator",
    "BuiltinTokenIssuer",
    "Htpasswd",
    "Identity",
    "Policy",
    "Rule",
    "SigningKey",
    "TokenAuthenticator",
    "TokenCodec",
    "TokenIssuer",
    "hash_password",
    "load_key",
    "load_policy",
    "open_authenticator",
    "set_password",
    "write_htpasswd",
]


def open_authenticator(
    *,
    htpasswd: str | None,
    token_key: str | None,
    realm: str,
    service: str,
    acl: str | None = None,
    anonymous_pull: bool = False,
    issuer: str | None = None,
    token_ttl: int = TOKEN_TTL,
    token_path: str = "/token",
) -> Authenticator | None:
    """The authenticator for these options, or None when neither ``htpasswd`` nor
    ``token_key`` is given (an open registry).

    - ``htpasswd`` alone: Basic auth; ``realm`` is the realm name shown to users.
    - ``token_key``: Bearer tokens from a built-in issuer the server mounts at
      ``token_path``; ``realm`` must be that endpoint's absolute URL (clients fetch
      it as is), e.g. ``http://127.0.0.1:5000/token``. Users come from ``htpasswd``.
      A missing ``token_key`` file is created (EC P-256, 0600).
    - ``acl``: a JSON policy file (see :mod:`.policy`); default: every authenticated
      user may pull, push and delete everything. ``anonymous_pull`` lets requests
      without credentials pull (every repository, unless the ACL names which).
    - ``issuer``: the tokens' ``iss`` claim, default ``realm``.

    Files are read now, so a broken one stops the server from starting.
    """
    if htpasswd is None and token_key is None:
        if acl is not None or anonymous_pull:
            raise InvalidArgument(
                "an ACL or anonymous pull needs authentication turned on",
                hint="give --htpasswd (and --token-key for token auth)",
            )
        return None
    try:  # a realm or service that cannot go in a challenge fails now, not per request
        bearer_challenge(realm, service)
    except RegistryError as exc:
        raise InvalidArgument(f"unusable realm or service: {exc.message}") from exc
    policy = DEFAULT_POLICY if acl is None else load_policy(acl)
    if anonymous_pull:
        policy = policy.with_anonymous_pull()
    users = None if htpasswd is None else Htpasswd(htpasswd)
    if token_key is None:
        assert users is not None
        return BasicAuthenticator(users, policy, realm=realm)
    if users is None and not policy.anonymous:
        raise InvalidArgument(
            "token auth without --htpasswd has no users, and anonymous pull is off",
            hint="give --htpasswd FILE for the users the issuer knows",
        )
    if not realm.startswith(("http://", "https://")):
        raise InvalidArgument(
            f"token auth needs the issuer's absolute URL as realm, not {realm!r}",
            hint="e.g. http://127.0.0.1:5000/token",
        )
    codec = TokenCodec(load_key(token_key), issuer or realm, service, ttl=token_ttl)
    return TokenAuthenticator(
        BuiltinTokenIssuer(codec, users, policy, realm=realm, path=token_path)
    )
