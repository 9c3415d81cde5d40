"""AWS Signature Version 4 for S3 requests (pure: strings in, headers out).

Follows "Signature Calculations for the Authorization Header" of the S3 API reference:
canonical request -> string to sign -> HMAC chain of date, region, service ->
``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.
The payload is named by its SHA-256 (hex) or by ``UNSIGNED-PAYLOAD``; S3 checks a
signed payload hash against the body it receives, so a body that was changed in
flight is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """SigV4 "UriEncode": every byte but the unreserved ``A-Za-z0-9-._~`` is %XX
    (uppercase hex); ``/`` is kept in object key paths, encoded in query values."""
    return quote(text, safe="/~" if keep_slash else "~")


def canonical_query(query: Mapping[str, str]) -> str:
    # Sorted by encoded name, then value (S3 SigV4 "CanonicalQueryString").
    pairs = sorted(
        (uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False)) for k, v in query.items()
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret_key).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def sign(
    creds: Credentials,
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    amz_date: str,
    region: str,
    service: str = "s3",
) -> dict[str, str]:
    """The headers to add to a request: ``x-amz-date``, ``x-amz-content-sha256``,
    ``x-amz-security-token`` (if any) and ``Authorization``. ``path`` is the raw
    (unencoded) absolute path; ``headers`` must include ``host``; every given header is
    signed. ``amz_date`` is ``YYYYMMDDTHHMMSSZ`` (UTC)."""
    added = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    if creds.session_token:
        added["x-amz-security-token"] = creds.session_token
    merged: dict[str, str] = {}
    for name, value in (*headers.items(), *added.items()):
        # Header values are trimmed and inner runs of spaces squeezed (SigV4 "Trimall").
        merged[name.lower()] = " ".join(str(value).split())
    names = sorted(merged)
    canonical_headers = "".join(f"{n}:{merged[n]}\n" for n in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        (
            method,
            uri_encode(path, keep_slash=True),
            canonical_query(query),
            canonical_headers,
            signed_headers,
            payload_sha256,
        )
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = signing_key(creds.secret_key, date, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
