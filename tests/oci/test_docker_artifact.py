"""Docker schema2 <-> OCI conversion, artifacts and referrers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.errors import InvalidArgument, Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.artifact import (
    EMPTY_DESCRIPTOR,
    EMPTY_DIGEST,
    EMPTY_JSON,
    artifact_type_of,
    is_empty_descriptor,
    new_artifact,
    referrer_descriptor,
    referrers_index,
)
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.docker import DOCKER_LAYER, DOCKER_LAYER_FOREIGN, oci_media_type, to_docker, to_oci
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.oci.platform import Platform


def d(n: int, media_type: str, **kw: Any) -> Descriptor:
    return Descriptor(media_type, Digest.from_bytes(bytes([n])), n, **kw)


def docker_manifest(*layer_types: str) -> Manifest:
    return Manifest(
        config=d(1, mt.DOCKER_CONFIG),
        layers=tuple(d(10 + i, t) for i, t in enumerate(layer_types)),
        media_type=mt.DOCKER_MANIFEST,
    )


def oci_manifest(*layer_types: str, **kw: Any) -> Manifest:
    return Manifest(
        config=kw.pop("config", d(1, mt.OCI_CONFIG)),
        layers=tuple(d(10 + i, t) for i, t in enumerate(layer_types)),
        **kw,
    )


# ------------------------------------------------------------------ to_oci

TO_OCI_LAYERS = [
    (mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER_GZIP),
    (DOCKER_LAYER, mt.OCI_LAYER),
    (mt.DOCKER_LAYER_ZSTD, mt.OCI_LAYER_ZSTD),
    (mt.DOCKER_LAYER_FOREIGN_GZIP, mt.OCI_LAYER_NONDIST_GZIP),
    (DOCKER_LAYER_FOREIGN, mt.OCI_LAYER_NONDIST),
    (mt.OCI_LAYER_GZIP, mt.OCI_LAYER_GZIP),  # already OCI: unchanged
    ("application/vnd.example.unknown", "application/vnd.example.unknown"),  # kept
]


@pytest.mark.parametrize(("docker_type", "oci_type"), TO_OCI_LAYERS)
def test_to_oci_layer_types(docker_type: str, oci_type: str) -> None:
    m = to_oci(docker_manifest(docker_type))
    assert m.media_type == mt.OCI_MANIFEST
    assert m.config.media_type == mt.OCI_CONFIG
    assert m.layers[0].media_type == oci_type
    # blobs are not touched: same digest and size
    assert m.layers[0].digest == Digest.from_bytes(bytes([10]))
    assert m.config.digest == Digest.from_bytes(bytes([1]))
    assert oci_media_type(docker_type) == oci_type


def test_to_oci_keeps_urls_of_foreign_layers() -> None:
    foreign = d(5, mt.DOCKER_LAYER_FOREIGN_GZIP, urls=("https://example.com/l.tgz",))
    m = Manifest(d(1, mt.DOCKER_CONFIG), (foreign,), media_type=mt.DOCKER_MANIFEST)
    assert to_oci(m).layers[0].urls == ("https://example.com/l.tgz",)


def test_parsed_docker_manifest_converts_and_back() -> None:
    raw = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": str(d(1, "x").digest), "size": 1},
        "layers": [
            {"mediaType": mt.DOCKER_LAYER_GZIP, "digest": str(d(2, "x").digest), "size": 2},
        ],
    }
    m = parse_document(json.dumps(raw).encode(), mt.DOCKER_MANIFEST)
    assert isinstance(m, Manifest) and m.is_docker
    oci = to_oci(m)
    assert oci.to_json()["mediaType"] == mt.OCI_MANIFEST
    assert to_docker(oci) == m
    assert to_docker(oci).to_json() == raw


def test_to_oci_index_relabels_and_replaces_children() -> None:
    amd = d(3, mt.DOCKER_MANIFEST, platform=Platform("linux", "amd64"))
    arm = d(4, mt.DOCKER_MANIFEST, platform=Platform("linux", "arm64", "v8"))
    lst = Index((amd, arm), media_type=mt.DOCKER_MANIFEST_LIST, annotations={"a": "b"})
    converted = d(30, mt.OCI_MANIFEST)
    out = to_oci(lst, {amd.digest: converted})
    assert out.media_type == mt.OCI_INDEX
    assert out.manifests[0].digest == converted.digest
    assert out.manifests[0].media_type == mt.OCI_MANIFEST
    assert out.manifests[0].platform == Platform("linux", "amd64")  # carried over
    assert out.manifests[1] == arm  # not replaced: unchanged
    assert dict(out.annotations) == {"a": "b"}


# ------------------------------------------------------------------ to_docker

TO_DOCKER_LAYERS = [
    (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP),
    (mt.OCI_LAYER, DOCKER_LAYER),
    (mt.OCI_LAYER_NONDIST_GZIP, mt.DOCKER_LAYER_FOREIGN_GZIP),
    (mt.OCI_LAYER_NONDIST, DOCKER_LAYER_FOREIGN),
    (mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_GZIP),  # already Docker
]


@pytest.mark.parametrize(("oci_type", "docker_type"), TO_DOCKER_LAYERS)
def test_to_docker_layer_types(oci_type: str, docker_type: str) -> None:
    m = to_docker(oci_manifest(oci_type, annotations={"k": "v"}))
    assert m.media_type == mt.DOCKER_MANIFEST
    assert m.config.media_type == mt.DOCKER_CONFIG
    assert m.layers[0].media_type == docker_type
    assert dict(m.annotations) == {"k": "v"}


def test_round_trip_oci_docker_oci() -> None:
    m = oci_manifest(mt.OCI_LAYER_GZIP, mt.OCI_LAYER, mt.OCI_LAYER_NONDIST_GZIP)
    assert to_oci(to_docker(m)) == m


def test_zstd_only_with_allow_zstd() -> None:
    m = oci_manifest(mt.OCI_LAYER_ZSTD)
    with pytest.raises(Unsupported, match="no Docker schema2 form") as info:
        to_docker(m)
    assert info.value.hint == "recompress the layer with gzip"
    assert to_docker(m, allow_zstd=True).layers[0].media_type == mt.DOCKER_LAYER_ZSTD


TO_DOCKER_ERRORS: list[tuple[str, Manifest | Index, str]] = [
    ("nondistributable zstd", oci_manifest(mt.OCI_LAYER_NONDIST_ZSTD), "no Docker schema2 form"),
    ("unknown layer type", oci_manifest("application/vnd.example.blob"), "no Docker schema2 form"),
    (
        "artifact type",
        oci_manifest(mt.OCI_LAYER_GZIP, artifact_type="application/x.sbom"),
        "artifactType",
    ),
    (
        "subject",
        oci_manifest(mt.OCI_LAYER_GZIP, subject=d(9, mt.OCI_MANIFEST)),
        "subject",
    ),
    (
        "non-image config",
        oci_manifest(mt.OCI_LAYER_GZIP, config=EMPTY_DESCRIPTOR),
        "not an image config",
    ),
    ("nested index", Index((d(3, mt.OCI_INDEX),)), "cannot nest"),
    ("non-manifest entry", Index((d(3, "application/x.blob"),)), "only image manifests"),
    ("index artifact type", Index((), artifact_type="application/x.a"), "artifactType"),
    ("index subject", Index((), subject=d(9, mt.OCI_MANIFEST)), "subject"),
]


@pytest.mark.parametrize(
    ("doc", "message"), [c[1:] for c in TO_DOCKER_ERRORS], ids=[c[0] for c in TO_DOCKER_ERRORS]
)
def test_to_docker_errors(doc: Manifest | Index, message: str) -> None:
    with pytest.raises(Unsupported, match=message):
        to_docker(doc)


def test_to_docker_index() -> None:
    child = d(3, mt.OCI_MANIFEST, platform=Platform("linux", "amd64"))
    replacement = d(33, mt.DOCKER_MANIFEST)
    out = to_docker(Index((child,)), {child.digest: replacement})
    assert out.media_type == mt.DOCKER_MANIFEST_LIST
    assert out.manifests[0].digest == replacement.digest
    assert out.manifests[0].platform == Platform("linux", "amd64")
    # without a replacement an OCI manifest child is kept as it is
    assert to_docker(Index((child,))).manifests == (child,)


# ------------------------------------------------------------------ artifacts


def test_empty_descriptor_constants() -> None:
    assert EMPTY_JSON == b"{}"
    assert Digest.from_bytes(EMPTY_JSON) == EMPTY_DIGEST
    assert str(EMPTY_DIGEST) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
    assert EMPTY_DESCRIPTOR.to_json() == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": str(EMPTY_DIGEST),
        "size": 2,
        "data": "e30=",
    }
    assert is_empty_descriptor(EMPTY_DESCRIPTOR)
    assert is_empty_descriptor(Descriptor(mt.OCI_EMPTY, EMPTY_DIGEST, 2))
    assert not is_empty_descriptor(Descriptor(mt.OCI_CONFIG, EMPTY_DIGEST, 2))


ARTIFACT_TYPES: list[tuple[str, Manifest | Index, str | None]] = [
    ("artifactType wins", oci_manifest(artifact_type="application/x.sig"), "application/x.sig"),
    ("else config mediaType", oci_manifest(), mt.OCI_CONFIG),
    (
        "custom config type",
        oci_manifest(config=d(1, "application/vnd.example.config+json")),
        "application/vnd.example.config+json",
    ),
    ("index with artifactType", Index((), artifact_type="application/x.idx"), "application/x.idx"),
    ("index without", Index(()), None),
]


@pytest.mark.parametrize(
    ("doc", "want"), [c[1:] for c in ARTIFACT_TYPES], ids=[c[0] for c in ARTIFACT_TYPES]
)
def test_artifact_type_of(doc: Manifest | Index, want: str | None) -> None:
    assert artifact_type_of(doc) == want


def test_new_artifact_without_blobs() -> None:
    subject = d(9, mt.OCI_MANIFEST)
    m = new_artifact("application/vnd.example.sbom", subject=subject, annotations={"a": "b"})
    assert m.config == EMPTY_DESCRIPTOR
    assert m.layers == (EMPTY_DESCRIPTOR,)
    assert m.subject == subject
    again = Manifest.parse(m.to_bytes())
    assert again == m
    assert artifact_type_of(again) == "application/vnd.example.sbom"


def test_new_artifact_with_layers_and_config() -> None:
    blob = d(7, "application/vnd.example.data")
    cfg = d(8, "application/vnd.example.config+json")
    m = new_artifact("application/vnd.example", [blob], config=cfg)
    assert m.layers == (blob,)
    assert m.config == cfg


def test_new_artifact_needs_a_type() -> None:
    with pytest.raises(InvalidArgument, match="artifactType"):
        new_artifact("")


def test_referrers() -> None:
    sig = new_artifact("application/x.sig", subject=d(9, mt.OCI_MANIFEST), annotations={"k": "v"})
    sbom = oci_manifest(config=d(1, "application/x.sbom-config"), subject=d(9, mt.OCI_MANIFEST))
    e1 = referrer_descriptor(sig.to_descriptor(platform=Platform("linux", "amd64")), sig)
    e2 = referrer_descriptor(sbom.to_descriptor(), sbom)
    assert e1.artifact_type == "application/x.sig"
    assert dict(e1.annotations) == {"k": "v"}
    assert e1.platform is None
    assert e2.artifact_type == "application/x.sbom-config"
    all_ = referrers_index([e1, e2])
    assert all_.media_type == mt.OCI_INDEX and all_.manifests == (e1, e2)
    assert referrers_index([e1, e2], "application/x.sig").manifests == (e1,)
    assert referrers_index([e1, e2], "application/none").manifests == ()
