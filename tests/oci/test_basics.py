"""Digest, Descriptor, Platform and canonical JSON: the validations of the base values."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from lamina.errors import DigestMismatch, InvalidArgument, InvalidFormat, LimitExceeded
from lamina.oci.canonical import canonical_json, load_json_object
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest, Digester, new_hasher
from lamina.oci.platform import Platform

HEX = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "sha256",
        "sha256:",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX.upper()}",
        f"md5:{HEX}",
        f"SHA256:{HEX}",
        f"sha512:{HEX}",
        f"sha256:{HEX[:-1]}g",
        f"sha256:../{HEX[3:]}",
    ],
)
def test_digest_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Digest.parse(text)


def test_digest_basics() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert d == Digest.from_bytes(b"x") and d.hex == HEX and str(d) == f"sha256:{HEX}"
    d.verify(b"x")
    with pytest.raises(DigestMismatch):
        d.verify(b"y")
    d512 = Digest.from_bytes(b"x", "sha512")
    assert d512.hex == hashlib.sha512(b"x").hexdigest()
    dg = Digester()
    dg.update(b"x")
    assert dg.digest() == d and dg.size == 1
    with pytest.raises(InvalidArgument):
        new_hasher("md5")


def dj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"mediaType": "application/x", "digest": f"sha256:{HEX}", "size": 1}
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


DESCRIPTOR_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", [], "JSON object"),
    ("no mediaType", dj(mediaType=None), "'mediaType'"),
    ("empty mediaType", dj(mediaType=""), "no mediaType"),
    ("mediaType not a string", dj(mediaType=1), "mediaType or size"),
    ("no digest", dj(digest=None), "'digest'"),
    ("digest not a string", dj(digest=5), "malformed digest"),
    ("bad digest", dj(digest="sha256:x"), "invalid digest"),
    ("no size", dj(size=None), "'size'"),
    ("size a string", dj(size="1"), "size"),
    ("size a bool", dj(size=True), "size"),
    ("negative size", dj(size=-1), "negative"),
    ("size over int64", dj(size=1 << 63), "over int64"),
    ("data not base64", dj(data="!!"), "base64"),
    # found by fuzz/targets/manifest.py: non-ASCII text raised a bare ValueError
    ("data not ASCII", dj(data="eA\u00e9="), "base64"),
    ("data wrong size", dj(data="eHg="), "size mismatch"),
    ("annotations not strings", dj(annotations={"a": 1}), "annotations"),
    ("urls not strings", dj(urls=[1]), "urls"),
    ("urls not a list", dj(urls="http://x"), "urls"),
    ("platform malformed", dj(platform={"os": "linux"}), "platform"),
    (
        "platform features a string",
        dj(platform={"os": "l", "architecture": "a", "os.features": "x"}),
        "os.features",
    ),
    (
        "platform variant a number",
        dj(platform={"os": "l", "architecture": "a", "variant": 8}),
        "variant",
    ),
]


@pytest.mark.parametrize(
    ("obj", "message"), [c[1:] for c in DESCRIPTOR_ERRORS], ids=[c[0] for c in DESCRIPTOR_ERRORS]
)
def test_descriptor_invalid(obj: Any, message: str) -> None:
    with pytest.raises(InvalidFormat, match=message):
        Descriptor.from_json(obj)


def test_descriptor_data_digest_mismatch() -> None:
    with pytest.raises(DigestMismatch):
        Descriptor.from_json(dj(data="eQ=="))  # "y", size 1, but the digest is of "x"


def test_descriptor_round_trip() -> None:
    obj = dj(
        data="eA==",
        urls=["https://e.com/x"],
        annotations={"a": "b"},
        artifactType="application/y",
        platform={"os": "linux", "architecture": "arm", "variant": "v7", "os.features": ["f"]},
    )
    d = Descriptor.from_json(obj)
    assert d.to_json() == obj
    assert d.with_annotations({"c": "d"}).annotations == {"c": "d"}


def test_platform() -> None:
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert str(Platform("linux", "amd64")) == "linux/amd64"
    for bad in ("linux", "linux/", "/amd64", "a/b/c/d"):
        with pytest.raises(InvalidArgument):
            Platform.parse(bad)
    assert Platform("linux", "arm", "v7").matches(Platform("linux", "arm"))
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert Platform.host().os == "linux"


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    with pytest.raises(InvalidArgument, match="canonical JSON"):
        canonical_json({"x": float("nan")})
    with pytest.raises(InvalidArgument, match="canonical JSON"):
        canonical_json({"x": object()})
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(InvalidFormat, match="not valid in JSON"):
            load_json_object(b'{"x": ' + constant + b"}", "doc")
    with pytest.raises(InvalidFormat, match="not valid JSON"):
        load_json_object(b"[" * 100_000 + b"]" * 100_000, "doc")
    assert load_json_object(b'{"a":1}', "doc") == {"a": 1}
    with pytest.raises(LimitExceeded):
        load_json_object(b"{}  ", "doc", max_bytes=3)
    with pytest.raises(InvalidFormat, match="doc is not valid JSON"):
        load_json_object(b"{", "doc")
    with pytest.raises(InvalidFormat, match="must be a JSON object, got list"):
        load_json_object(b"[]", "doc")
