"""Bearer token verification (JWT) and htpasswd parsing: what clients hand the
registry's auth. An input starting with ``{`` is a claim set, signed with the
registry's own key before it is verified, so the claims checks are reached too."""

from __future__ import annotations

import base64
import json

import jwt

from fuzz.harness import tolerant
from lamina.registry.authn.htpasswd import parse_htpasswd
from lamina.registry.authn.tokens import TokenCodec, generate_key

_KEY = generate_key()
_CODEC = TokenCodec(_KEY, issuer="fuzz-issuer", service="fuzz-service")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _signed(data: bytes) -> str | None:
    try:
        claims = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    claims.setdefault("iss", "fuzz-issuer")
    claims.setdefault("aud", "fuzz-service")
    try:
        return jwt.encode(claims, _KEY.key, algorithm=_KEY.algorithm, headers={"kid": _KEY.kid})
    except (TypeError, ValueError, OverflowError):
        return None  # not a claim set PyJWT can sign: nothing to verify


def one_input(data: bytes) -> None:
    if data[:1] == b"{":
        token = _signed(data)
        if token is not None:
            _CODEC.verify(token)
        return
    tolerant(parse_htpasswd, data)
    tolerant(_CODEC.verify, f"{_b64(data)}.{_b64(data[::-1])}.{_b64(data[:8])}")
    _CODEC.verify(data.decode("utf-8", "replace"))
