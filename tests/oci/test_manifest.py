"""Manifest, Index and parse_document: valid and invalid documents, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.errors import InvalidFormat, LimitExceeded, Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES, canonical_json
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.oci.platform import Platform


def desc(n: int, media_type: str = mt.OCI_LAYER_GZIP, **extra: Any) -> dict[str, Any]:
    """A descriptor JSON object whose digest is that of the single byte ``n``."""
    return {
        "mediaType": media_type,
        "digest": str(Digest.from_bytes(bytes([n]))),
        "size": n,
        **extra,
    }


CONFIG = desc(1, mt.OCI_CONFIG)
LAYER = desc(2)
SUBJECT = desc(9, mt.OCI_MANIFEST)


def manifest_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": CONFIG,
        "layers": [LAYER],
    }
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


def index_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [desc(3, mt.OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"})],
    }
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


def b(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# ---------------------------------------------------------------- valid manifests

VALID_MANIFESTS: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("oci, typed both ways", manifest_obj(), mt.OCI_MANIFEST, mt.OCI_MANIFEST),
    ("oci, typed in JSON only", manifest_obj(), None, mt.OCI_MANIFEST),
    ("oci, typed by caller only", manifest_obj(mediaType=None), mt.OCI_MANIFEST, mt.OCI_MANIFEST),
    ("untyped defaults to oci", manifest_obj(mediaType=None), None, mt.OCI_MANIFEST),
    ("empty caller type says nothing", manifest_obj(mediaType=None), "", mt.OCI_MANIFEST),
    (
        "docker schema2",
        manifest_obj(
            mediaType=mt.DOCKER_MANIFEST,
            config=desc(1, mt.DOCKER_CONFIG),
            layers=[desc(2, mt.DOCKER_LAYER_GZIP)],
        ),
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST,
    ),
    ("no layers (empty array)", manifest_obj(layers=[]), None, mt.OCI_MANIFEST),
    (
        "artifact with subject and annotations",
        manifest_obj(
            artifactType="application/vnd.example.sbom",
            config=desc(2, mt.OCI_EMPTY),
            subject=SUBJECT,
            annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        ),
        None,
        mt.OCI_MANIFEST,
    ),
    (
        "unknown fields are ignored",
        manifest_obj(futureField={"x": 1}, **{"io.example/extra": [1, 2]}),
        None,
        mt.OCI_MANIFEST,
    ),
]


@pytest.mark.parametrize(
    ("obj", "given", "want_type"),
    [c[1:] for c in VALID_MANIFESTS],
    ids=[c[0] for c in VALID_MANIFESTS],
)
def test_valid_manifest(obj: dict[str, Any], given: str | None, want_type: str) -> None:
    m = Manifest.parse(b(obj), given)
    assert m.media_type == want_type
    assert m.config.to_json() == obj["config"]
    assert [layer.to_json() for layer in m.layers] == obj["layers"]
    assert m.artifact_type == obj.get("artifactType")
    assert (m.subject.to_json() if m.subject else None) == obj.get("subject")
    assert dict(m.annotations) == obj.get("annotations", {})
    # round trip through canonical bytes gives an equal value
    again = Manifest.parse(m.to_bytes(), m.media_type)
    assert again == m
    assert m.to_bytes() == canonical_json(m.to_json())
    assert "futureField" not in m.to_json()
    assert parse_document(b(obj), given) == m


# ---------------------------------------------------------------- invalid manifests

INVALID_MANIFESTS: list[tuple[str, bytes, str | None, type[Exception], str]] = [
    ("not JSON", b"{nope", None, InvalidFormat, "not valid JSON"),
    ("not an object", b"[1]", None, InvalidFormat, "JSON object"),
    ("not UTF-8", b'{"a": "\xff"}', None, InvalidFormat, "not valid JSON"),
    ("no schemaVersion", b(manifest_obj(schemaVersion=None)), None, InvalidFormat, "schemaVersion"),
    ("schemaVersion 3", b(manifest_obj(schemaVersion=3)), None, InvalidFormat, "must be 2"),
    (
        "schemaVersion as string",
        b(manifest_obj(schemaVersion="2")),
        None,
        InvalidFormat,
        "must be 2",
    ),
    (
        "schemaVersion as bool",
        b(manifest_obj(schemaVersion=True)),
        None,
        InvalidFormat,
        "must be 2",
    ),
    ("schema 1", b(manifest_obj(schemaVersion=1)), None, Unsupported, "schema 1"),
    (
        "mediaType not a string",
        b(manifest_obj(mediaType=5)),
        None,
        InvalidFormat,
        "must be a string",
    ),
    ("JSON says index", b(manifest_obj(mediaType=mt.OCI_INDEX)), None, InvalidFormat, "declares"),
    (
        "JSON and caller disagree",
        b(manifest_obj(mediaType=mt.DOCKER_MANIFEST)),
        mt.OCI_MANIFEST,
        InvalidFormat,
        "served as",
    ),
    ("caller says config", b(manifest_obj()), mt.OCI_CONFIG, InvalidFormat, "is not one of"),
    (
        "caller says schema 1",
        b(manifest_obj()),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        Unsupported,
        "schema 1",
    ),
    (
        "manifest with manifests (GHSA-77vh-xpmg-72qh)",
        b(manifest_obj(manifests=[])),
        None,
        InvalidFormat,
        "only an index",
    ),
    ("no config", b(manifest_obj(config=None)), None, InvalidFormat, "'config'"),
    ("config not an object", b(manifest_obj(config="x")), None, InvalidFormat, "JSON object"),
    ("no layers", b(manifest_obj(layers=None)), None, InvalidFormat, "'layers'"),
    ("layers not an array", b(manifest_obj(layers={})), None, InvalidFormat, "JSON array"),
    (
        "layer without digest",
        b(manifest_obj(layers=[{"mediaType": mt.OCI_LAYER, "size": 1}])),
        None,
        InvalidFormat,
        "'digest'",
    ),
    (
        "layer with bad digest",
        b(manifest_obj(layers=[{**LAYER, "digest": "sha256:abc"}])),
        None,
        InvalidFormat,
        "invalid digest",
    ),
    (
        "layer with negative size",
        b(manifest_obj(layers=[{**LAYER, "size": -1}])),
        None,
        InvalidFormat,
        "negative size",
    ),
    (
        "layer with float size",
        b(manifest_obj(layers=[{**LAYER, "size": 1.5}])),
        None,
        InvalidFormat,
        "size",
    ),
    (
        "embedded data that does not match",
        b(manifest_obj(config={**CONFIG, "data": "e30="})),
        None,
        InvalidFormat,
        "embedded data",
    ),
    (
        "artifactType not a string",
        b(manifest_obj(artifactType=1)),
        None,
        InvalidFormat,
        "artifactType",
    ),
    ("subject not an object", b(manifest_obj(subject=[])), None, InvalidFormat, "subject"),
    (
        "annotations not strings",
        b(manifest_obj(annotations={"a": 1})),
        None,
        InvalidFormat,
        "annotations",
    ),
    ("annotations a list", b(manifest_obj(annotations=["a"])), None, InvalidFormat, "annotations"),
]


@pytest.mark.parametrize(
    ("data", "given", "error", "message"),
    [c[1:] for c in INVALID_MANIFESTS],
    ids=[c[0] for c in INVALID_MANIFESTS],
)
def test_invalid_manifest(
    data: bytes, given: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Manifest.parse(data, given)


def test_manifest_over_cap_is_refused_before_parsing() -> None:
    padding = "x" * MAX_DOCUMENT_BYTES
    data = b(manifest_obj(annotations={"pad": padding}))
    with pytest.raises(LimitExceeded, match="cap"):
        Manifest.parse(data)
    with pytest.raises(LimitExceeded):
        parse_document(data, mt.OCI_MANIFEST)


def test_manifest_at_cap_is_read() -> None:
    base = b(manifest_obj(annotations={"pad": ""}))
    data = b(manifest_obj(annotations={"pad": "x" * (MAX_DOCUMENT_BYTES - len(base))}))
    assert len(data) == MAX_DOCUMENT_BYTES
    assert Manifest.parse(data).annotations["pad"].startswith("xx")


def test_to_bytes_refuses_over_cap() -> None:
    m = Manifest(Descriptor.from_json(CONFIG), annotations={"pad": "x" * MAX_DOCUMENT_BYTES})
    with pytest.raises(InvalidFormat, match="cap"):
        m.to_bytes()


def test_construction_validates_media_type() -> None:
    with pytest.raises(InvalidFormat, match="not an image manifest"):
        Manifest(Descriptor.from_json(CONFIG), media_type=mt.OCI_INDEX)
    with pytest.raises(InvalidFormat, match="not an image index"):
        Index(media_type=mt.OCI_MANIFEST)


def test_to_bytes_is_canonical_and_stable() -> None:
    m = Manifest.parse(b(manifest_obj(annotations={"b": "2", "a": "1"})))
    data = m.to_bytes()
    assert data.startswith(b'{"annotations":{"a":"1","b":"2"},"config":')
    assert b" " not in data
    assert Manifest.parse(data).to_bytes() == data


def test_to_descriptor_points_at_canonical_bytes() -> None:
    m = Manifest.parse(b(manifest_obj(artifactType="application/x.a")))
    d = m.to_descriptor(platform=Platform("linux", "arm64", "v8"), annotations={"k": "v"})
    assert d.digest == Digest.from_bytes(m.to_bytes())
    assert d.size == len(m.to_bytes())
    assert d.media_type == mt.OCI_MANIFEST
    assert d.artifact_type == "application/x.a"
    assert d.platform == Platform("linux", "arm64", "v8")
    assert dict(d.annotations) == {"k": "v"}


def test_annotations_are_read_only() -> None:
    m = Manifest(Descriptor.from_json(CONFIG), annotations={"a": "b"})
    with pytest.raises(TypeError):
        m.annotations["a"] = "c"  # type: ignore[index]


# ---------------------------------------------------------------- indexes

VALID_INDEXES: list[tuple[str, dict[str, Any], str | None, str]] = [
    ("oci", index_obj(), mt.OCI_INDEX, mt.OCI_INDEX),
    ("oci typed in JSON only", index_obj(), None, mt.OCI_INDEX),
    ("untyped defaults to oci", index_obj(mediaType=None), None, mt.OCI_INDEX),
    (
        "docker manifest list",
        index_obj(
            mediaType=mt.DOCKER_MANIFEST_LIST,
            manifests=[
                desc(3, mt.DOCKER_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
                desc(
                    4,
                    mt.DOCKER_MANIFEST,
                    platform={"os": "linux", "architecture": "arm", "variant": "v7"},
                ),
            ],
        ),
        mt.DOCKER_MANIFEST_LIST,
        mt.DOCKER_MANIFEST_LIST,
    ),
    ("empty", index_obj(manifests=[]), None, mt.OCI_INDEX),
    (
        "with artifactType, subject, annotations",
        index_obj(artifactType="application/x.sig", subject=SUBJECT, annotations={"org.x": "y"}),
        None,
        mt.OCI_INDEX,
    ),
    (
        "nested index and unknown fields",
        index_obj(manifests=[desc(5, mt.OCI_INDEX)], x=1),
        None,
        mt.OCI_INDEX,
    ),
]


@pytest.mark.parametrize(
    ("obj", "given", "want_type"), [c[1:] for c in VALID_INDEXES], ids=[c[0] for c in VALID_INDEXES]
)
def test_valid_index(obj: dict[str, Any], given: str | None, want_type: str) -> None:
    idx = Index.parse(b(obj), given)
    assert idx.media_type == want_type
    assert [m.to_json() for m in idx.manifests] == obj["manifests"]
    assert idx.artifact_type == obj.get("artifactType")
    assert dict(idx.annotations) == obj.get("annotations", {})
    assert Index.parse(idx.to_bytes(), idx.media_type) == idx
    assert parse_document(b(obj), given) == idx
    assert idx.is_docker == (want_type == mt.DOCKER_MANIFEST_LIST)


INVALID_INDEXES: list[tuple[str, bytes, str | None, type[Exception], str]] = [
    ("no schemaVersion", b(index_obj(schemaVersion=None)), None, InvalidFormat, "schemaVersion"),
    ("schemaVersion 1", b(index_obj(schemaVersion=1)), None, Unsupported, "schema 1"),
    ("no manifests", b(index_obj(manifests=None)), None, InvalidFormat, "'manifests'"),
    ("manifests not a list", b(index_obj(manifests={})), None, InvalidFormat, "JSON array"),
    ("entry not an object", b(index_obj(manifests=[1])), None, InvalidFormat, "JSON object"),
    (
        "index with config (GHSA-77vh-xpmg-72qh)",
        b(index_obj(config=CONFIG)),
        None,
        InvalidFormat,
        "only an image manifest",
    ),
    (
        "index with layers (GHSA-77vh-xpmg-72qh)",
        b(index_obj(layers=[])),
        None,
        InvalidFormat,
        "only an image manifest",
    ),
    (
        "JSON says manifest",
        b(index_obj(mediaType=mt.OCI_MANIFEST)),
        None,
        InvalidFormat,
        "declares",
    ),
    (
        "JSON and caller disagree",
        b(index_obj()),
        mt.DOCKER_MANIFEST_LIST,
        InvalidFormat,
        "served as",
    ),
    ("caller says manifest", b(index_obj()), mt.OCI_MANIFEST, InvalidFormat, "is not one of"),
    (
        "platform without os",
        b(index_obj(manifests=[desc(3, mt.OCI_MANIFEST, platform={"architecture": "amd64"})])),
        None,
        InvalidFormat,
        "platform",
    ),
    (
        "annotations malformed",
        b(index_obj(annotations={"a": None})),
        None,
        InvalidFormat,
        "annotations",
    ),
]


@pytest.mark.parametrize(
    ("data", "given", "error", "message"),
    [c[1:] for c in INVALID_INDEXES],
    ids=[c[0] for c in INVALID_INDEXES],
)
def test_invalid_index(
    data: bytes, given: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Index.parse(data, given)


# ---------------------------------------------------------------- parse_document

KINDS: list[tuple[str, bytes, str | None, type[Manifest] | type[Index]]] = [
    ("manifest by caller type", b(manifest_obj(mediaType=None)), mt.OCI_MANIFEST, Manifest),
    ("index by caller type", b(index_obj(mediaType=None)), mt.OCI_INDEX, Index),
    ("manifest by JSON type", b(manifest_obj()), "application/json", Manifest),
    ("index by JSON type", b(index_obj()), None, Index),
    ("docker list by JSON type", b(index_obj(mediaType=mt.DOCKER_MANIFEST_LIST)), None, Index),
    ("manifest by shape", b(manifest_obj(mediaType=None)), None, Manifest),
    ("index by shape", b(index_obj(mediaType=None)), "", Index),
]


@pytest.mark.parametrize(
    ("data", "given", "kind"), [c[1:] for c in KINDS], ids=[c[0] for c in KINDS]
)
def test_parse_document_kind(
    data: bytes, given: str | None, kind: type[Manifest] | type[Index]
) -> None:
    assert type(parse_document(data, given)) is kind


PARSE_DOCUMENT_ERRORS: list[tuple[str, bytes, str | None, type[Exception], str]] = [
    (
        "ambiguous untyped document",
        b({"schemaVersion": 2, "manifests": [], "config": CONFIG, "layers": []}),
        None,
        InvalidFormat,
        "ambiguous",
    ),
    (
        "typed manifest with manifests",
        b(manifest_obj(manifests=[])),
        None,
        InvalidFormat,
        "only an index",
    ),
    (
        "config document",
        b({"architecture": "amd64", "os": "linux"}),
        None,
        InvalidFormat,
        "neither",
    ),
    (
        "foreign mediaType",
        b({"schemaVersion": 2, "mediaType": "text/plain"}),
        None,
        InvalidFormat,
        "not a manifest",
    ),
    (
        "schema 1 by media type",
        b({"schemaVersion": 1}),
        "application/vnd.docker.distribution.manifest.v1+json",
        Unsupported,
        "schema 1",
    ),
    ("schema 1 by shape", b({"schemaVersion": 1, "fsLayers": []}), None, Unsupported, "schema 1"),
    (
        "schema 1 by JSON type",
        b(
            {
                "schemaVersion": 1,
                "mediaType": "application/vnd.docker.distribution.manifest.v1+json",
            }
        ),
        None,
        Unsupported,
        "schema 1",
    ),
]


@pytest.mark.parametrize(
    ("data", "given", "error", "message"),
    [c[1:] for c in PARSE_DOCUMENT_ERRORS],
    ids=[c[0] for c in PARSE_DOCUMENT_ERRORS],
)
def test_parse_document_errors(
    data: bytes, given: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_document(data, given)


def test_index_with_manifests_replaces_entries() -> None:
    idx = Index.parse(b(index_obj(annotations={"a": "b"})))
    new = idx.with_manifests((Descriptor.from_json(desc(7, mt.OCI_MANIFEST)),))
    assert [m.size for m in new.manifests] == [7]
    assert new.annotations == idx.annotations
    assert new.media_type == idx.media_type


@pytest.mark.parametrize("declared", [{"a": 1}, ["application/vnd.oci.image.index.v1+json"], 2])
def test_parse_document_refuses_a_media_type_that_is_not_a_string(declared: object) -> None:
    # found by fuzz/targets/manifest.py: an unhashable mediaType raised TypeError
    data = json.dumps({"schemaVersion": 2, "mediaType": declared, "manifests": []}).encode()
    with pytest.raises(InvalidFormat, match="must be a string"):
        parse_document(data)
