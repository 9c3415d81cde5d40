"""Error bodies, tag pagination, manifest PUT checks and referrers answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.oci import mediatypes as mt
from lamina.oci.artifact import EMPTY_DESCRIPTOR, new_artifact
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.registry import protocol as p
from lamina.registry.errors import CODES, RegistryError, error_body


def _blob(data: bytes, media_type: str = mt.OCI_LAYER_GZIP) -> Descriptor:
    return Descriptor(media_type, Digest.from_bytes(data), len(data))


CONFIG = _blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}', mt.OCI_CONFIG)
LAYER1 = _blob(b"layer one")
LAYER2 = _blob(b"layer two")
IMAGE = Manifest(CONFIG, (LAYER1, LAYER2))
IMAGE_BYTES = IMAGE.to_bytes()
IMAGE_DIGEST = Digest.from_bytes(IMAGE_BYTES)

SPEC_CODES = [
    ("BLOB_UNKNOWN", 404),
    ("BLOB_UPLOAD_INVALID", 400),
    ("BLOB_UPLOAD_UNKNOWN", 404),
    ("DIGEST_INVALID", 400),
    ("MANIFEST_BLOB_UNKNOWN", 404),
    ("MANIFEST_INVALID", 400),
    ("MANIFEST_UNKNOWN", 404),
    ("NAME_INVALID", 400),
    ("NAME_UNKNOWN", 404),
    ("SIZE_INVALID", 400),
    ("UNAUTHORIZED", 401),
    ("DENIED", 403),
    ("UNSUPPORTED", 405),
    ("TOOMANYREQUESTS", 429),
]


@pytest.mark.parametrize(("code", "status"), SPEC_CODES)
def test_every_spec_code_has_a_status_and_a_body(code: str, status: int) -> None:
    err = RegistryError(code, detail={"k": 1})
    assert err.status == status and err.message == CODES[code][1]
    body = json.loads(error_body([err]))
    assert body == {"errors": [{"code": code, "message": CODES[code][1], "detail": {"k": 1}}]}


def test_error_body_details() -> None:
    a = RegistryError("NAME_UNKNOWN", "no such repo")
    b = RegistryError("BLOB_UNKNOWN", status=400)
    assert b.status == 400
    assert json.loads(error_body([a, b])) == {
        "errors": [
            {"code": "NAME_UNKNOWN", "message": "no such repo"},
            {"code": "BLOB_UNKNOWN", "message": CODES["BLOB_UNKNOWN"][1]},
        ]
    }
    assert error_body([RegistryError("RANGE_NOT_SATISFIABLE")]) == b""
    assert RegistryError("RANGE_NOT_SATISFIABLE").status == 416
    assert "BLOB_UNKNOWN" in repr(b)


def test_unknown_code_is_refused() -> None:
    with pytest.raises(Exception, match="unknown registry error code"):
        RegistryError("NOPE")


TAGS = ["v2", "latest", "v1", "a", "v10"]
URL = "/v2/lib/x/tags/list"


@pytest.mark.parametrize(
    ("n", "last", "page", "link"),
    [
        (None, None, ["a", "latest", "v1", "v10", "v2"], None),
        (2, None, ["a", "latest"], f'<{URL}?n=2&last=latest>; rel="next"'),
        (2, "latest", ["v1", "v10"], f'<{URL}?n=2&last=v10>; rel="next"'),
        (2, "v10", ["v2"], None),
        (3, "v1", ["v10", "v2"], None),
        (5, None, ["a", "latest", "v1", "v10", "v2"], None),
        (0, None, [], None),
        (1, "v2", [], None),
        (1, "zzz", [], None),
        (1, "b", ["latest"], f'<{URL}?n=1&last=latest>; rel="next"'),  # last need not exist
        (None, "v1", ["v10", "v2"], None),
    ],
)
def test_paginate(n: int | None, last: str | None, page: list[str], link: str | None) -> None:
    assert p.paginate(TAGS, n, last, URL) == (page, link)


def test_paginate_caps_the_page_and_escapes_last() -> None:
    many = [f"t{i:05d}" for i in range(p.PAGE_MAX + 5)]
    page, link = p.paginate(many, None, None, URL)
    assert len(page) == p.PAGE_MAX
    assert link == f'<{URL}?n={p.PAGE_MAX}&last={page[-1]}>; rel="next"'
    page, link = p.paginate(["a+b", "c"], 1, None, URL)
    assert link == f'<{URL}?n=1&last=a%2Bb>; rel="next"'


@given(st.sets(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), max_size=30), st.integers(1, 7))
def test_following_links_lists_every_tag_once(tags: set[str], n: int) -> None:
    seen: list[str] = []
    last = None
    for _ in range(100):
        page, link = p.paginate(tags, n, last, URL)
        seen += page
        if link is None:
            break
        last = link.split("last=")[1].split(">")[0]
    assert seen == sorted(tags)


def test_bodies() -> None:
    assert json.loads(p.tags_body("x", ["a"])) == {"name": "x", "tags": ["a"]}
    assert json.loads(p.catalog_body(["x", "y/z"])) == {"repositories": ["x", "y/z"]}


def test_manifest_put_by_tag() -> None:
    put = p.check_manifest_put(mt.OCI_MANIFEST, IMAGE_BYTES, "latest")
    assert (put.digest, put.tag, put.subject, put.media_type) == (
        IMAGE_DIGEST,
        "latest",
        None,
        mt.OCI_MANIFEST,
    )
    assert put.doc == IMAGE
    assert put.headers == {"Docker-Content-Digest": str(IMAGE_DIGEST)}


def test_manifest_put_by_digest_and_charset_parameter() -> None:
    put = p.check_manifest_put(mt.OCI_MANIFEST + "; charset=utf-8", IMAGE_BYTES, str(IMAGE_DIGEST))
    assert (put.digest, put.tag) == (IMAGE_DIGEST, None)


def test_manifest_put_by_sha512_digest() -> None:
    d512 = Digest.from_bytes(IMAGE_BYTES, "sha512")
    assert p.check_manifest_put(mt.OCI_MANIFEST, IMAGE_BYTES, str(d512)).digest == d512


def test_put_by_tag_hashes_with_the_asked_algorithm_or_the_one_pushed_under() -> None:
    d512 = Digest.from_bytes(IMAGE_BYTES, "sha512")
    assert p.check_manifest_put(mt.OCI_MANIFEST, IMAGE_BYTES, "v1", "sha512").digest == d512
    put = p.check_manifest_put(mt.OCI_MANIFEST, IMAGE_BYTES, "v1")
    assert put.digest == IMAGE_DIGEST
    # held only under sha512 (pushed by that digest): the tag points there
    assert p.digest_pushed_under(put, IMAGE_BYTES, lambda d: d == d512).digest == d512
    # held under the canonical digest, or not at all: unchanged
    assert p.digest_pushed_under(put, IMAGE_BYTES, lambda d: True) is put
    assert p.digest_pushed_under(put, IMAGE_BYTES, lambda d: False) is put
    by_digest = p.check_manifest_put(mt.OCI_MANIFEST, IMAGE_BYTES, str(IMAGE_DIGEST))
    assert p.digest_pushed_under(by_digest, IMAGE_BYTES, lambda d: d == d512) is by_digest


def test_manifest_digest_is_of_the_bytes_as_sent() -> None:
    spaced = json.dumps(IMAGE.to_json(), indent=3).encode()
    put = p.check_manifest_put(None, spaced, "t")
    assert put.digest == Digest.from_bytes(spaced) != IMAGE_DIGEST


def test_manifest_put_with_subject_answers_oci_subject() -> None:
    sbom = new_artifact("application/spdx+json", (LAYER1,), subject=IMAGE.to_descriptor())
    put = p.check_manifest_put(mt.OCI_MANIFEST, sbom.to_bytes(), "sbom")
    assert put.subject == IMAGE_DIGEST
    assert put.headers["OCI-Subject"] == str(IMAGE_DIGEST)


def test_index_put() -> None:
    index = Index((IMAGE.to_descriptor(),))
    put = p.check_manifest_put(mt.OCI_INDEX, index.to_bytes(), "multi")
    assert isinstance(put.doc, Index) and put.media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    ("header", "body", "ref", "code", "status"),
    [
        (mt.OCI_MANIFEST, b"x" * (4 * 1024 * 1024 + 1), "t", "SIZE_INVALID", 413),
        (mt.OCI_INDEX, IMAGE_BYTES, "t", "MANIFEST_INVALID", 400),  # header disagrees
        (mt.DOCKER_MANIFEST, IMAGE_BYTES, "t", "MANIFEST_INVALID", 400),
        ("application/octet-stream", IMAGE_BYTES, "t", "MANIFEST_INVALID", 400),
        (
            "application/vnd.oci.artifact.manifest.v1+json",
            IMAGE_BYTES,
            "t",
            "MANIFEST_INVALID",
            400,
        ),
        (mt.OCI_MANIFEST, b"not json", "t", "MANIFEST_INVALID", 400),
        (mt.OCI_MANIFEST, b"[]", "t", "MANIFEST_INVALID", 400),
        (mt.OCI_MANIFEST, b'{"schemaVersion":2}', "t", "MANIFEST_INVALID", 400),
        (None, b'{"schemaVersion":1,"fsLayers":[]}', "t", "MANIFEST_INVALID", 400),
        (mt.OCI_MANIFEST, IMAGE_BYTES, "sha256:" + "0" * 64, "DIGEST_INVALID", 400),
        (mt.OCI_MANIFEST, IMAGE_BYTES, "sha256:0", "DIGEST_INVALID", 400),
    ],
)
def test_manifest_put_refusals(
    header: str | None, body: bytes, ref: str, code: str, status: int
) -> None:
    with pytest.raises(RegistryError) as info:
        p.check_manifest_put(header, body, ref)
    assert (info.value.code, info.value.status) == (code, status)


def test_manifest_and_index_confusion_is_refused() -> None:
    obj = IMAGE.to_json() | {"manifests": []}
    body = json.dumps(obj).encode()
    with pytest.raises(RegistryError) as info:
        p.check_manifest_put(mt.OCI_MANIFEST, body, "t")
    assert info.value.code == "MANIFEST_INVALID"


def test_missing_blobs() -> None:
    have = {CONFIG.digest}
    assert p.missing_blobs(IMAGE, have.__contains__) == [LAYER1.digest, LAYER2.digest]
    have |= {LAYER1.digest, LAYER2.digest}
    assert p.missing_blobs(IMAGE, have.__contains__) == []
    twice = Manifest(CONFIG, (LAYER1, LAYER1))
    assert p.missing_blobs(twice, lambda d: False) == [CONFIG.digest, LAYER1.digest]


def test_missing_blobs_ignores_subject_and_foreign_layers() -> None:
    foreign = Descriptor(
        mt.DOCKER_LAYER_FOREIGN_GZIP, LAYER2.digest, LAYER2.size, urls=("https://e.x/l",)
    )
    doc = Manifest(CONFIG, (LAYER1, foreign), subject=IMAGE.to_descriptor())
    assert p.missing_blobs(doc, lambda d: False) == [CONFIG.digest, LAYER1.digest]
    # A distributable layer with urls is still required.
    with_urls = Descriptor(mt.OCI_LAYER_GZIP, LAYER2.digest, LAYER2.size, urls=("https://e.x",))
    assert LAYER2.digest in p.missing_blobs(Manifest(CONFIG, (with_urls,)), lambda d: False)


def test_missing_blobs_of_an_index() -> None:
    index = Index((IMAGE.to_descriptor(), _blob(b"other", mt.OCI_MANIFEST)))
    known = {IMAGE_DIGEST}
    assert p.missing_blobs(index, known.__contains__) == [Digest.from_bytes(b"other")]
    err = p.manifest_blob_unknown([Digest.from_bytes(b"other")])
    assert (err.code, err.status) == ("MANIFEST_BLOB_UNKNOWN", 404)
    assert err.detail == {"digests": [str(Digest.from_bytes(b"other"))]}


def test_referrers_response() -> None:
    subject = IMAGE.to_descriptor()
    sig = new_artifact(
        "application/vnd.example.sig", (LAYER1,), subject=subject, annotations={"k": "v"}
    )
    sbom = new_artifact("application/spdx+json", (LAYER2,), subject=subject)
    other = new_artifact("application/spdx+json", (LAYER2,), subject=_blob(b"o", mt.OCI_MANIFEST))
    plain = Manifest(CONFIG, (LAYER1,))
    cfg_typed = Manifest(
        _blob(b"{}", "application/vnd.example.config+json"), (LAYER1,), subject=subject
    )
    stored = [(d.to_descriptor(), d) for d in (sig, sbom, other, plain, cfg_typed)]

    body, headers = p.referrers_response(IMAGE_DIGEST, stored)
    assert headers == {"Content-Type": mt.OCI_INDEX}
    index = Index.parse(body, mt.OCI_INDEX)
    by_digest = {e.digest: e for e in index.manifests}
    assert set(by_digest) == {
        sig.to_descriptor().digest,
        sbom.to_descriptor().digest,
        cfg_typed.to_descriptor().digest,
    }
    assert [e.digest for e in index.manifests] == sorted(by_digest)
    assert by_digest[sig.to_descriptor().digest].annotations == {"k": "v"}
    assert by_digest[sig.to_descriptor().digest].artifact_type == "application/vnd.example.sig"
    assert by_digest[cfg_typed.to_descriptor().digest].artifact_type == (
        "application/vnd.example.config+json"
    )

    body, headers = p.referrers_response(IMAGE_DIGEST, stored, "application/spdx+json")
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [e.digest for e in Index.parse(body).manifests] == [sbom.to_descriptor().digest]


def test_referrers_of_nothing_is_an_empty_index() -> None:
    body, headers = p.referrers_response(IMAGE_DIGEST, [])
    assert json.loads(body) == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    assert "OCI-Filters-Applied" not in headers
    assert EMPTY_DESCRIPTOR.size == 2


def test_blob_answer_whole_and_partial() -> None:
    d = Digest.from_bytes(b"0123456789")
    whole = p.blob_answer(d, 10, None)
    assert (whole.status, whole.start, whole.end, whole.length) == (200, 0, 9, 10)
    assert whole.headers == {
        "Docker-Content-Digest": str(d),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Length": "10",
    }
    part = p.blob_answer(d, 10, "bytes=-3")
    assert (part.status, part.start, part.end, part.length) == (206, 7, 9, 3)
    assert part.headers["Content-Range"] == "bytes 7-9/10"
    assert part.headers["Content-Length"] == "3"
    empty = p.blob_answer(d, 0, None)
    assert (empty.status, empty.length) == (200, 0)
    with pytest.raises(RegistryError) as info:
        p.blob_answer(d, 10, "bytes=10-")
    assert info.value.status == 416


def test_manifest_headers_and_api_version() -> None:
    assert p.manifest_headers(IMAGE_DIGEST, mt.DOCKER_MANIFEST, 7) == {
        "Content-Type": mt.DOCKER_MANIFEST,
        "Docker-Content-Digest": str(IMAGE_DIGEST),
        "Content-Length": "7",
    }
    assert p.API_VERSION_HEADERS == {"Docker-Distribution-API-Version": "registry/2.0"}
