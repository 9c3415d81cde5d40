"""HTTP Basic credentials (RFC 7617) checked against htpasswd users: the one check both
the Basic authenticator and the token endpoint make. Every refusal is a 401 carrying
``Basic realm="…"``, as distribution's htpasswd access controller answers."""

from __future__ import annotations

from lamina.registry.authn.htpasswd import Htpasswd
from lamina.registry.challenges import basic_challenge, parse_authorization, unauthorized
from lamina.registry.errors import RegistryError


def basic_refusal(realm: str, message: str) -> RegistryError:
    """A 401 whose challenge asks for Basic credentials for ``realm``."""
    return unauthorized(basic_challenge(realm), message)


def basic_user(
    authorization: str | None, users: Htpasswd | None, realm: str, *, taker: str
) -> str | None:
    """The user whose Basic credentials ``authorization`` carries, verified against
    ``users`` (None: no user is known); None when the request carries none (the caller
    decides whether anonymous may pass). ``taker`` names the endpoint in the refusal of
    another scheme ("this registry", "the token endpoint")."""
    try:
        parsed = parse_authorization(authorization)
    except RegistryError as exc:
        raise basic_refusal(realm, exc.message) from exc
    if parsed is None:
        return None
    scheme, user, password = parsed
    if scheme != "basic":
        raise basic_refusal(realm, f"{taker} takes Basic credentials")
    if users is None or not users.verify(user, password):
        raise basic_refusal(realm, "invalid username or password")
    return user
