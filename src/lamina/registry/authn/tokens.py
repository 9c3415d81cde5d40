"""Registry bearer tokens: JWTs as distribution's "Token Authentication Implementation"
describes them, signed and checked with one key.

Claims: ``iss``, ``sub`` (the user; ``""`` when anonymous), ``aud`` (the registry's
service name), ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``, a list of
``{"type", "name", "actions"}``. The header names the algorithm and a ``kid`` (the key id
docker-registry uses, so it can verify these tokens given :meth:`SigningKey.certificate_pem`
as its ``rootcertbundle``). The key is EC P-256 (ES256) or RSA of 2048 bits or more
(RS256); verification accepts exactly that one algorithm, so ``alg: none`` and the
HS256-signed-with-the-public-key confusion are refused before any signature check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lamina.atomic import fsync_dir, write_all
from lamina.errors import InvalidArgument, InvalidFormat, Unsupported
from lamina.registry.challenges import Scope

LEEWAY = 10  # seconds of clock skew tolerated on exp/nbf/iat
TOKEN_TTL = 300  # distribution's token servers default to 5 minutes
TOKEN_MAX = 16384  # bytes; a token is a few hundred bytes per scope
_ACCESS_MAX = 64  # resources per token

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def key_id(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """The key id distribution (docker-registry 2.x) gives a key in its
    ``rootcertbundle`` and looks a token's ``kid`` up by: SHA-256 of the DER
    SubjectPublicKeyInfo, cut to 240 bits, base32, in twelve groups of four joined by
    ``:``. Using it lets a docker-registry verify this issuer's tokens."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key, its JWS algorithm and its key id."""

    key: _PrivateKey
    algorithm: str  # "ES256" or "RS256"
    kid: str

    @classmethod
    def from_private_key(cls, key: object) -> SigningKey:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise Unsupported(
                    f"EC key on curve {key.curve.name}; token signing needs P-256",
                    hint="make one with `openssl ecparam -name prime256v1 -genkey -noout`",
                )
            return cls(key, "ES256", key_id(key.public_key()))
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise Unsupported(f"RSA key of {key.key_size} bits; at least 2048 needed")
            return cls(key, "RS256", key_id(key.public_key()))
        raise Unsupported(
            f"token keys must be EC P-256 or RSA, not {type(key).__name__}",
            hint="omit the file and lamina creates an EC P-256 key",
        )

    def certificate_pem(self, days: int = 3650) -> bytes:
        """A self-signed certificate of the public key, for verifiers that take keys
        only as certificates (docker-registry's ``auth.token.rootcertbundle``)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina token issuer")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=days))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key() -> SigningKey:
    return SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


def load_key(path: str, *, create: bool = True) -> SigningKey:
    """The PEM private key in ``path``; when the file does not exist and ``create`` is
    set, a new EC P-256 key is written there first (mode 0600, published with
    ``link`` so two servers starting at once end up sharing one key)."""
    try:
        with open(path, "rb") as f:
            pem = f.read(1 << 20)
    except FileNotFoundError:
        if not create:
            raise InvalidArgument(f"token key {path} not found") from None
        return _create_key(path)
    except OSError as exc:
        raise InvalidArgument(f"cannot read token key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidFormat(
            f"token key {path} is not an unencrypted PEM private key",
            hint="give an EC P-256 or RSA key in PEM, or a path that does not exist yet",
        ) from exc
    return SigningKey.from_private_key(key)


def _create_key(path: str) -> SigningKey:
    fresh = generate_key()
    pem = fresh.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link, not rename: it fails when another process published a key first.
            os.link(tmp, path)
        except FileExistsError:
            return load_key(path, create=False)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(directory)
    except OSError as exc:
        raise InvalidArgument(f"cannot create token key {path}: {exc.strerror}") from exc
    return fresh


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's claims."""

    subject: str
    access: tuple[Scope, ...]
    expires: int
    issued: int
    jti: str


class InvalidToken(InvalidArgument):
    """A token that is malformed, forged, expired or meant for someone else."""


def _access_claim(scopes: tuple[Scope, ...]) -> list[dict[str, Any]]:
    return [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in scopes]


def _parse_access(raw: object) -> tuple[Scope, ...]:
    if not isinstance(raw, list) or len(raw) > _ACCESS_MAX:
        raise InvalidToken("token 'access' claim is not a list of resources")
    out: list[Scope] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidToken("token 'access' entry is not an object")
        kind, name, actions = item.get("type"), item.get("name"), item.get("actions")
        if not (isinstance(kind, str) and kind and isinstance(name, str) and name):
            raise InvalidToken("token 'access' entry lacks a type or name")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise InvalidToken("token 'access' entry has malformed actions")
        if actions:
            out.append(Scope(name, tuple(actions), kind))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TokenCodec:
    """Signs and verifies tokens for one ``issuer`` and one ``service`` (the audience)."""

    key: SigningKey
    issuer: str
    service: str
    ttl: int = TOKEN_TTL
    leeway: int = LEEWAY

    def sign(
        self, subject: str, access: tuple[Scope, ...], *, now: float | None = None
    ) -> tuple[str, int, int]:
        """``(token, issued_at, expires_in)`` for ``subject`` with ``access``."""
        if len(access) > _ACCESS_MAX:
            raise InvalidArgument(f"a token holds at most {_ACCESS_MAX} resources")
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": issued + self.ttl,
            "nbf": issued,
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "access": _access_claim(access),
        }
        token = jwt.encode(
            claims,
            self.key.key,
            algorithm=self.key.algorithm,
            headers={"kid": self.key.kid, "typ": "JWT"},
        )
        return token, issued, self.ttl

    def verify(self, token: str) -> Claims:
        """The claims of a token this codec's key signed for this issuer and service,
        not expired (within ``leeway``); anything else raises :class:`InvalidToken`."""
        if len(token) > TOKEN_MAX:
            raise InvalidToken("token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        # Pin the algorithm and key before looking at the signature (RFC 8725 3.1):
        # 'none' and HMAC-keyed-with-our-public-key never get as far as decode().
        if header.get("alg") != self.key.algorithm:
            raise InvalidToken(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted")
        if header.get("kid") != self.key.kid:
            raise InvalidToken("token was signed by another key")
        try:
            claims = jwt.decode(
                token,
                self.key.key.public_key(),
                algorithms=[self.key.algorithm],
                audience=self.service,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token refused: {exc}") from exc
        subject, jti = claims.get("sub"), claims.get("jti")
        if not isinstance(subject, str) or not isinstance(jti, str):
            raise InvalidToken("token 'sub' and 'jti' must be strings")
        return Claims(
            subject=subject,
            access=_parse_access(claims.get("access", [])),
            expires=int(claims["exp"]),
            issued=int(claims["iat"]),
            jti=jti,
        )
