"""Registry JWTs: real keys, real signatures; forged, expired and confused tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lamina.errors import InvalidArgument, InvalidFormat, Unsupported
from lamina.registry.authn.tokens import (
    LEEWAY,
    InvalidToken,
    SigningKey,
    TokenCodec,
    generate_key,
    key_id,
    load_key,
)
from lamina.registry.challenges import Scope

PULL_A = (Scope("a", ("pull",)),)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return generate_key()


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.from_private_key(rsa.generate_private_key(65537, 2048))


@pytest.fixture
def codec(ec_key: SigningKey) -> TokenCodec:
    return TokenCodec(ec_key, "http://127.0.0.1:5000/token", "registry.test")


def _pem(key: object) -> bytes:
    assert isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("which", ["ec_key", "rsa_key"])
def test_round_trip(request: pytest.FixtureRequest, which: str) -> None:
    key: SigningKey = request.getfixturevalue(which)
    codec = TokenCodec(key, "iss", "svc")
    access = (Scope("a/b", ("pull", "push")), Scope("catalog", ("*",), "registry"))
    token, issued, ttl = codec.sign("alice", access)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": key.algorithm, "kid": key.kid, "typ": "JWT"}
    raw = json.loads(_unb64(token.split(".")[1]))
    assert raw["access"] == [
        {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert raw["iss"] == "iss" and raw["aud"] == "svc" and raw["sub"] == "alice"
    assert raw["exp"] == issued + ttl and raw["nbf"] == raw["iat"] == issued
    claims = codec.verify(token)
    assert claims.subject == "alice" and claims.access == access
    assert claims.jti == raw["jti"]
    assert codec.sign("alice", access)[0] != token  # a fresh jti every time
    assert key.algorithm == ("ES256" if which == "ec_key" else "RS256")


def test_key_id_is_distributions_format(ec_key: SigningKey, rsa_key: SigningKey) -> None:
    # docker-registry looks a token's kid up by this id (the interop test proves it
    # verifies our tokens); here: its shape, and that it follows the public key.
    for key in (ec_key, rsa_key):
        assert re.fullmatch(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}", key.kid), key.kid
        assert key_id(key.key.public_key()) == key.kid
    assert ec_key.kid != rsa_key.kid != generate_key().kid


def test_certificate_carries_the_public_key(ec_key: SigningKey) -> None:
    cert = x509.load_pem_x509_certificate(ec_key.certificate_pem())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.PEM, spki) == ec_key.public_pem()
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_expired_and_not_yet_valid(codec: TokenCodec) -> None:
    old, _, ttl = codec.sign("alice", PULL_A, now=time.time() - codec.ttl - LEEWAY - 5)
    with pytest.raises(InvalidToken, match="expired"):
        codec.verify(old)
    recent, _, _ = codec.sign("alice", PULL_A, now=time.time() - ttl - LEEWAY + 5)
    assert codec.verify(recent).subject == "alice"  # inside the leeway
    future, _, _ = codec.sign("alice", PULL_A, now=time.time() + 120)
    with pytest.raises(InvalidToken):
        codec.verify(future)


def test_tampered_tokens(codec: TokenCodec) -> None:
    token, _, _ = codec.sign("alice", PULL_A)
    head, payload, sig = token.split(".")
    raw = _unb64(sig)
    flipped = _b64(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(InvalidToken):
        codec.verify(f"{head}.{payload}.{flipped}")
    # Widen the grant in the payload, keep the signature: refused.
    claims = json.loads(_unb64(payload))
    claims["access"][0]["actions"] = ["pull", "push"]
    forged = _b64(json.dumps(claims).encode())
    with pytest.raises(InvalidToken):
        codec.verify(f"{head}.{forged}.{sig}")
    for junk in ("", "a.b", "a.b.c", "..", "x" * 20000, token + "x"):
        with pytest.raises(InvalidToken):
            codec.verify(junk)


def test_wrong_audience_and_issuer(codec: TokenCodec) -> None:
    token, _, _ = codec.sign("alice", PULL_A)
    other_service = TokenCodec(codec.key, codec.issuer, "other.service")
    with pytest.raises(InvalidToken, match=r"(?i)audience"):
        other_service.verify(token)
    other_issuer = TokenCodec(codec.key, "http://evil/token", codec.service)
    with pytest.raises(InvalidToken, match=r"(?i)issuer"):
        other_issuer.verify(token)


def test_other_key_refused_even_with_our_kid(codec: TokenCodec) -> None:
    stranger = generate_key()
    token, _, _ = TokenCodec(stranger, codec.issuer, codec.service).sign("alice", PULL_A)
    with pytest.raises(InvalidToken, match="another key"):
        codec.verify(token)
    claims = json.loads(_unb64(token.split(".")[1]))
    spoofed = jwt.encode(
        claims, stranger.key, algorithm="ES256", headers={"kid": codec.key.kid, "typ": "JWT"}
    )
    with pytest.raises(InvalidToken, match=r"[Ss]ignature"):
        codec.verify(spoofed)


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _claims(codec: TokenCodec) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": codec.issuer,
        "sub": "alice",
        "aud": codec.service,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "j",
        "access": [{"type": "repository", "name": "a", "actions": ["pull", "push"]}],
    }


def test_alg_none_refused(codec: TokenCodec) -> None:
    for alg in ("none", "None", "NONE"):
        token = _unsigned({"alg": alg, "kid": codec.key.kid, "typ": "JWT"}, _claims(codec)) + "."
        with pytest.raises(InvalidToken, match="algorithm"):
            codec.verify(token)


@pytest.mark.parametrize("which", ["ec_key", "rsa_key"])
def test_hs256_keyed_with_the_public_key_refused(
    request: pytest.FixtureRequest, which: str
) -> None:
    # Algorithm confusion: an attacker who knows the public key signs with HMAC using
    # the public PEM as the secret, hoping the verifier uses it as an HMAC key.
    key: SigningKey = request.getfixturevalue(which)
    codec = TokenCodec(key, "iss", "svc")
    signing_input = _unsigned({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, _claims(codec))
    for secret in (key.public_pem(), key.public_pem().strip()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken, match="algorithm"):
            codec.verify(f"{signing_input}.{_b64(mac)}")


def test_the_other_asymmetric_algorithm_refused(ec_key: SigningKey, rsa_key: SigningKey) -> None:
    codec = TokenCodec(ec_key, "iss", "svc")
    claims = _claims(codec)
    token = jwt.encode(claims, rsa_key.key, algorithm="RS256", headers={"kid": ec_key.kid})
    with pytest.raises(InvalidToken, match="algorithm"):
        codec.verify(token)


@pytest.mark.parametrize(
    "change",
    [
        {"exp": None},
        {"nbf": None},
        {"iat": None},
        {"jti": None},
        {"sub": None},
        {"sub": 7},
        {"access": "repository:a:pull"},
        {"access": [{"type": "repository", "name": "a", "actions": "pull"}]},
        {"access": [{"type": "repository", "actions": ["pull"]}]},
        {"access": [["repository", "a", "pull"]]},
        {"access": [{"type": "repository", "name": "a", "actions": ["pull"]}] * 65},
    ],
)
def test_malformed_claims_refused(codec: TokenCodec, change: dict[str, object]) -> None:
    claims = _claims(codec)
    for k, v in change.items():
        if v is None:
            del claims[k]
        else:
            claims[k] = v
    token = jwt.encode(
        claims, codec.key.key, algorithm="ES256", headers={"kid": codec.key.kid, "typ": "JWT"}
    )
    with pytest.raises(InvalidToken):
        codec.verify(token)


def test_missing_key_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "token.pem"
    key = load_key(str(path))
    assert key.algorithm == "ES256"
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_key(str(path))
    assert again.kid == key.kid
    assert [p.name for p in tmp_path.iterdir()] == ["token.pem"]  # no temp leftovers
    with pytest.raises(InvalidArgument):
        load_key(str(tmp_path / "absent.pem"), create=False)


def test_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    path = str(tmp_path / "k.pem")
    kids: list[str] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        kids.append(load_key(path).kid)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kids) == 8 and len(set(kids)) == 1
    assert load_key(path).kid == kids[0]


def test_given_keys(tmp_path: Path) -> None:
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(_pem(rsa.generate_private_key(65537, 2048)))
    assert load_key(str(rsa_path)).algorithm == "RS256"
    small = tmp_path / "small.pem"
    small.write_bytes(_pem(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(Unsupported, match="2048"):
        load_key(str(small))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(Unsupported, match="P-256"):
        load_key(str(p384))
    ed = tmp_path / "ed.pem"
    ed.write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(Unsupported):
        load_key(str(ed))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(InvalidFormat):
        load_key(str(junk))
    public_only = tmp_path / "pub.pem"
    public_only.write_bytes(generate_key().public_pem())
    with pytest.raises(InvalidFormat):
        load_key(str(public_only))
