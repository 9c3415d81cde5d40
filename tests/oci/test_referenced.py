"""referenced_descriptors: what a garbage collector walks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.errors import InvalidFormat
from lamina.oci import mediatypes as mt
from lamina.oci.digest import Digest
from lamina.oci.manifest import referenced_descriptors


def _d(n: int, media_type: str = mt.OCI_LAYER_GZIP) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(Digest.from_bytes(bytes([n]))), "size": n}


CONFIG = _d(1, mt.OCI_CONFIG)
L1, L2 = _d(2), _d(3)
M1, M2 = _d(4, mt.OCI_MANIFEST), _d(5, mt.OCI_MANIFEST)
SUBJECT = _d(6, mt.OCI_MANIFEST)


def _b(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


CASES: list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = [
    (
        "oci manifest",
        mt.OCI_MANIFEST,
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CONFIG, "layers": [L1, L2]},
        [CONFIG, L1, L2],
    ),
    (
        "oci manifest with subject",
        mt.OCI_MANIFEST,
        {"schemaVersion": 2, "config": CONFIG, "layers": [L1], "subject": SUBJECT},
        [CONFIG, L1, SUBJECT],
    ),
    (
        "docker manifest",
        mt.DOCKER_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": _d(1, mt.DOCKER_CONFIG),
            "layers": [_d(2, mt.DOCKER_LAYER_GZIP)],
        },
        [_d(1, mt.DOCKER_CONFIG), _d(2, mt.DOCKER_LAYER_GZIP)],
    ),
    (
        "oci index",
        mt.OCI_INDEX,
        {"schemaVersion": 2, "manifests": [M1, M2], "subject": SUBJECT},
        [M1, M2, SUBJECT],
    ),
    (
        "docker manifest list",
        mt.DOCKER_MANIFEST_LIST,
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [M1]},
        [M1],
    ),
    (
        "manifest typed only in its JSON",
        "",
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CONFIG, "layers": [L1]},
        [CONFIG, L1],
    ),
    (
        "index typed only in its JSON",
        "application/octet-stream",
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [M1]},
        [M1],
    ),
    (
        "untyped index sniffed by shape",
        "",
        {"schemaVersion": 2, "manifests": [M1]},
        [M1],
    ),
    (
        "untyped manifest sniffed by shape",
        "",
        {"schemaVersion": 2, "config": CONFIG, "layers": []},
        [CONFIG],
    ),
    (
        "confused manifest keeps everything it names",
        mt.OCI_MANIFEST,
        {"schemaVersion": 2, "config": CONFIG, "layers": [L1], "manifests": [M1]},
        [CONFIG, L1, M1],
    ),
    ("config blob", mt.OCI_CONFIG, {"architecture": "amd64", "os": "linux"}, []),
    ("unknown JSON", "", {"hello": "world"}, []),
    ("empty index", mt.OCI_INDEX, {"schemaVersion": 2, "manifests": []}, []),
]


@pytest.mark.parametrize(
    ("media_type", "obj", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_referenced(media_type: str, obj: dict[str, Any], want: list[dict[str, Any]]) -> None:
    got = referenced_descriptors(media_type, _b(obj))
    assert [d.to_json() for d in got] == want


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        (mt.OCI_LAYER_GZIP, b"\x1f\x8b\x08\x00 not parsed"),
        (mt.OCI_LAYER, b'{"config": {}}'),  # a layer is never parsed, whatever it holds
        (mt.OCI_EMPTY, b"{}"),
        ("", b"\x00\x01 binary"),
        ("", b"[1, 2]"),
        ("", b"{not json"),
    ],
)
def test_non_manifest_blobs(media_type: str, data: bytes) -> None:
    assert referenced_descriptors(media_type, data) == []


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        (mt.OCI_MANIFEST, b"{broken"),
        (mt.OCI_MANIFEST, b"[]"),
        (mt.OCI_MANIFEST, _b({"config": {"mediaType": mt.OCI_CONFIG, "size": 1}})),
        (mt.OCI_INDEX, _b({"manifests": {"not": "a list"}})),
        (mt.OCI_INDEX, _b({"manifests": [{**M1, "digest": "sha256:xyz"}]})),
    ],
)
def test_malformed_declared_manifest_raises(media_type: str, data: bytes) -> None:
    with pytest.raises(InvalidFormat):
        referenced_descriptors(media_type, data)


@pytest.mark.parametrize("declared", [{"mediaType": mt.OCI_MANIFEST}, [mt.OCI_INDEX], 2])
def test_a_media_type_that_is_not_a_string_is_sniffed_by_shape(declared: object) -> None:
    # found by fuzz/targets/manifest.py: an object or a list as the JSON mediaType of an
    # untyped blob made the collector's set lookup raise TypeError (unhashable)
    digest = "sha256:" + "a" * 64
    obj = {
        "schemaVersion": 2,
        "mediaType": declared,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": digest, "size": 2},
        "layers": [],
    }
    got = referenced_descriptors("", json.dumps(obj).encode())
    assert [str(d.digest) for d in got] == [digest]
