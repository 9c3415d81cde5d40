"""The checks of the OCI distribution-spec conformance suite (v1.1.1, and the spec's main
branch with ``OCI_VERSION=dev``), written from the spec's text as lamina tests: the suite
itself is not available offline. Real HTTP on loopback against ``make_app`` over the
filesystem driver; each test names the spec section (or suite case) it stands for."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from helpers.registry_server import Client, Server
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ND_GZ = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
EMPTY = "application/vnd.oci.empty.v1+json"
BYTES = "application/octet-stream"
EXAMPLE_TYPE = "application/vnd.example.conformance.v1+json"
ALGORITHMS = ["sha256", "sha512"]
CHUNK_MIN = 1024  # the suite's smallest chunk


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def errors_of(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with Server(make_app(FilesystemStorage(tmp_path / "registry"))) as server:
        yield Client(server.port)


class Pusher:
    """Builds and pushes test content the way the suite's data generator does, all
    under one digest algorithm."""

    def __init__(self, client: Client, repo: str, algorithm: str = "sha256") -> None:
        self.client = client
        self.repo = repo
        self.algorithm = algorithm

    def blob(self, data: bytes, media_type: str = OCI_LAYER) -> dict[str, Any]:
        digest = self.client.push_blob(self.repo, data, self.algorithm)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, **extra: Any) -> dict[str, Any]:
        config = encode({"architecture": "amd64", "os": "linux", "seed": os.urandom(8).hex()})
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(config, OCI_CONFIG),
            "layers": [self.blob(os.urandom(300)) for _ in range(2)],
        }
        doc.update(extra)
        return doc

    def manifest(self, doc: dict[str, Any], ref: str | None = None, query: str = "") -> str:
        """PUT ``doc`` by digest (or by ``ref``); returns its digest and checks the 201."""
        body = encode(doc)
        digest = digest_of(body, self.algorithm)
        path = f"/v2/{self.repo}/manifests/{ref or digest}{query}"
        status, headers, answer = self.client.request(
            "PUT", path, body, {"Content-Type": doc["mediaType"]}
        )
        assert status == 201, answer
        assert headers["Docker-Content-Digest"] == digest
        assert headers["Location"]
        if "subject" in doc:  # spec "Pushing Manifests with Subject"
            assert headers["OCI-Subject"] == doc["subject"]["digest"]
        return digest

    def descriptor(self, doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body = encode(doc)
        return {
            "mediaType": doc["mediaType"],
            "digest": digest_of(body, self.algorithm),
            "size": len(body),
            **extra,
        }


def check_manifest(client: Client, repo: str, ref: str, doc: dict[str, Any], digest: str) -> None:
    """The suite's ManifestGetExists and ManifestHeadExists, with the digest header
    required (``OCI_VERSION=dev``)."""
    body = encode(doc)
    for method in ("GET", "HEAD"):
        status, headers, answer = client.request(
            method,
            f"/v2/{repo}/manifests/{ref}",
            headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"},
        )
        assert status == 200, (method, ref, answer)
        assert headers["Content-Type"] == doc["mediaType"]
        assert headers["Content-Length"] == str(len(body))
        assert headers["Docker-Content-Digest"] == digest, (method, ref)
        assert answer == (body if method == "GET" else b"")


# -- references that cannot name anything (v1.1.1 pull/push: ".INVALID_MANIFEST_NAME") --


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
@pytest.mark.parametrize("tag", [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "a+b"])
def test_manifest_by_invalid_tag_is_unknown(client: Client, method: str, tag: str) -> None:
    # Spec "Pulling manifests": a manifest that is not in the repository MUST be a 404;
    # a string the tag grammar refuses names nothing there.
    status, _, body = client.request(method, f"/v2/lib/app/manifests/{tag}")
    assert status == 404
    if method != "HEAD":
        assert errors_of(body) == ["MANIFEST_UNKNOWN"]


def test_invalid_tag_is_answered_after_auth(tmp_path: Path) -> None:
    # The 404 comes from the handler, after the authenticator: an anonymous client
    # learns nothing from it that a valid tag would not tell.
    from lamina.registry.authn import open_authenticator, write_htpasswd

    write_htpasswd(str(tmp_path / "htpasswd"), {"alice": "wonderland"}, cost=4)
    auth = open_authenticator(
        htpasswd=str(tmp_path / "htpasswd"), token_key=None, realm="lamina", service="s"
    )
    storage = FilesystemStorage(tmp_path / "registry")
    with Server(make_app(storage, authenticator=auth)) as server:
        path = "/v2/lib/app/manifests/.INVALID_MANIFEST_NAME"
        assert Client(server.port).request("GET", path)[0] == 401
        alice = "Basic " + base64.b64encode(b"alice:wonderland").decode()
        status, _, body = Client(server.port, auth=alice).request("GET", path)
        assert status == 404 and errors_of(body) == ["MANIFEST_UNKNOWN"]


def test_manifest_put_by_invalid_tag_is_still_refused(client: Client) -> None:
    p = Pusher(client, "lib/app")
    status, _, body = client.request(
        "PUT", "/v2/lib/app/manifests/.bad", encode(p.image()), {"Content-Type": OCI_MANIFEST}
    )
    assert status == 400 and errors_of(body) == ["MANIFEST_INVALID"]


def test_missing_manifests_and_bad_digest_references(client: Client) -> None:
    d = digest_of(os.urandom(1024))
    assert client.request("GET", f"/v2/lib/app/manifests/{d}")[0] == 404
    assert client.request("GET", "/v2/lib/app/manifests/missing-abcdefgh")[0] == 404
    p = Pusher(client, "lib/app")
    status, _, body = client.request(
        "PUT",
        "/v2/lib/app/manifests/sha256:baddigeststring",
        encode(p.image()),
        {"Content-Type": OCI_MANIFEST},
    )
    assert status == 400 and errors_of(body)
    assert client.request("GET", "/v2/lib/app/manifests/sha256:baddigeststring")[0] in (400, 404)


# -- push with tags (spec main "Pushing Manifests with Tags"; suite tag-param-*) ------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_push_by_digest_with_tag_params_answers_oci_tag(client: Client, algorithm: str) -> None:
    p = Pusher(client, "lib/app", algorithm)
    child = p.image()
    child_digest = p.manifest(child, query="?tag=child-0")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [p.descriptor(child, platform={"os": "linux", "architecture": "amd64"})],
    }
    body = encode(index)
    digest = digest_of(body, algorithm)
    status, headers, answer = client.request(
        "PUT",
        f"/v2/lib/app/manifests/{digest}?tag=top-0&tag=top-1",
        body,
        {"Content-Type": OCI_INDEX},
    )
    assert status == 201, answer
    assert headers["Docker-Content-Digest"] == digest
    # One OCI-Tag per tag accepted (the suite also accepts a comma-separated list).
    assert sorted(headers.get_all("OCI-Tag") or []) == ["top-0", "top-1"]
    for tag in ("top-0", "top-1"):
        check_manifest(client, "lib/app", tag, index, digest)
    check_manifest(client, "lib/app", "child-0", child, child_digest)
    check_manifest(client, "lib/app", digest, index, digest)
    status, _, listing = client.request("GET", "/v2/lib/app/tags/list")
    assert status == 200
    assert {"child-0", "top-0", "top-1"} <= set(json.loads(listing)["tags"])


def test_oci_tag_names_each_tag_once(client: Client) -> None:
    p = Pusher(client, "lib/app")
    doc = p.image()
    body = encode(doc)
    status, headers, _ = client.request(
        "PUT",
        "/v2/lib/app/manifests/v1?tag=v2&tag=v1&tag=v2",
        body,
        {"Content-Type": OCI_MANIFEST},
    )
    assert status == 201
    assert sorted(headers.get_all("OCI-Tag") or []) == ["v1", "v2"]


def test_manifest_put_by_tag_with_digest_algorithm(client: Client) -> None:
    # A push by tag names no digest: ``?digest-algorithm=`` (as for blob uploads) picks
    # the one the registry computes, answers and later serves the tag under.
    p = Pusher(client, "lib/app", "sha512")
    doc = p.image()
    digest = p.manifest(doc, ref="v1", query="?digest-algorithm=sha512")
    assert digest.startswith("sha512:")
    check_manifest(client, "lib/app", "v1", doc, digest)
    status, _, body = client.request(
        "PUT",
        "/v2/lib/app/manifests/v2?digest-algorithm=md5",
        encode(doc),
        {"Content-Type": OCI_MANIFEST},
    )
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]


# -- ranges (suite "range requests") ---------------------------------------------------


@pytest.fixture
def ranged(client: Client) -> tuple[Client, str, bytes]:
    data = os.urandom(2048)
    return client, client.push_blob("lib/app", data), data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
        ("bytes=0-0", 0, 0),
        ("bytes=-5000", 0, 2047),
    ],
)
def test_satisfiable_ranges(
    ranged: tuple[Client, str, bytes], header: str, start: int, end: int
) -> None:
    client, digest, data = ranged
    status, headers, body = client.request(
        "GET", f"/v2/lib/app/blobs/{digest}", headers={"Range": header}
    )
    assert status == 206
    assert body == data[start : end + 1]
    assert headers["Content-Length"] == str(end - start + 1)
    assert headers["Content-Range"] == f"bytes {start}-{end}/2048"


@pytest.mark.parametrize("header", ["bytes=500-0", "bytes=5000-10000", "bytes=2048-", "bytes=-0"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_unsatisfiable_ranges_are_416(
    ranged: tuple[Client, str, bytes], header: str, method: str
) -> None:
    # RFC 9110 15.5.17: 416 with "Content-Range: bytes */<size>"; the suite wants 416 for
    # a range whose end is before its start, not the whole blob.
    client, digest, _ = ranged
    status, headers, body = client.request(
        method, f"/v2/lib/app/blobs/{digest}", headers={"Range": header}
    )
    assert status == 416
    assert headers["Content-Range"] == "bytes */2048"
    assert body == b""


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-1", "bytes=0-1,5-6", "bytes=-", ""])
def test_ranges_a_server_may_ignore_answer_the_whole_blob(
    ranged: tuple[Client, str, bytes], header: str
) -> None:
    # RFC 9110 14.2: a Range in another unit, with several ranges, or that does not
    # parse may be ignored: 200 and the whole blob.
    client, digest, data = ranged
    status, headers, body = client.request(
        "GET", f"/v2/lib/app/blobs/{digest}", headers={"Range": header}
    )
    assert status == 200 and body == data
    assert "Content-Range" not in headers


# -- blob APIs, per algorithm (suite "<algo> blobs") -----------------------------------


def _check_blob(client: Client, repo: str, digest: str, data: bytes) -> None:
    status, headers, body = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(data))
    assert headers["Docker-Content-Digest"] == digest
    status, headers, body = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert status == 200 and body == data
    assert headers["Docker-Content-Digest"] == digest


def _delete_blob(client: Client, repo: str, digest: str) -> None:
    assert client.request("DELETE", f"/v2/{repo}/blobs/{digest}")[0] == 202
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 404


def _created(client: Client, status: int, headers: Any, digest: str, data: bytes) -> None:
    assert status == 201
    assert headers["Docker-Content-Digest"] == digest
    status, _, body = client.request("GET", headers["Location"])
    assert status == 200 and body == data


def _start(client: Client, repo: str) -> str:
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
    assert status == 202
    location: str = headers["Location"]
    return location


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_blob_push_apis(client: Client, algorithm: str) -> None:
    repo = "conformance/repo1"
    # get-missing
    assert client.request("GET", f"/v2/{repo}/blobs/{digest_of(b'never', algorithm)}")[0] == 404
    # post only
    data = os.urandom(512)
    d = digest_of(data, algorithm)
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
    _created(client, status, headers, d, data)
    _check_blob(client, repo, d, data)
    _delete_blob(client, repo, d)
    # post+put
    data = os.urandom(512)
    d = digest_of(data, algorithm)
    status, headers, _ = client.request("PUT", _with_digest(_start(client, repo), d), data)
    _created(client, status, headers, d, data)
    _check_blob(client, repo, d, data)
    # stream: one PATCH without Content-Range, then PUT with no body
    data = os.urandom(512)
    d = digest_of(data, algorithm)
    loc = _start(client, repo)
    status, headers, _ = client.request("PATCH", loc, iter([data]))
    assert status == 202
    status, headers, _ = client.request("PUT", _with_digest(headers["Location"], d), b"")
    _created(client, status, headers, d, data)
    # post cancel (an UploadCancel check of OCI_VERSION=dev)
    loc = _start(client, repo)
    assert client.request("DELETE", loc, b"")[0] == 204
    assert client.request("GET", loc)[0] == 404


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("put_last", [False, True])
@pytest.mark.parametrize("out_of_order", [False, True])
def test_chunked_uploads(
    client: Client, algorithm: str, put_last: bool, out_of_order: bool
) -> None:
    # The suite's BlobPatchChunked: three chunks (OCI-Chunk-Min-Length honoured), an
    # out-of-order chunk before each one answered 416, then the session recovered with a
    # GET (204, Range "0-<last byte>"), the last chunk sent with the closing PUT or not.
    repo = "conformance/repo1"
    data = os.urandom(CHUNK_MIN * 3 - 5)
    d = digest_of(data, algorithm)
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
    assert status == 202
    loc = headers["Location"]
    chunk = max(len(data) // 3 + 1, int(headers.get("OCI-Chunk-Min-Length") or 0), CHUNK_MIN)
    chunk = min(chunk, len(data))
    last = -1
    created = None
    while last < len(data) - 1:
        if out_of_order:
            bad = last + 1 + chunk
            if bad >= len(data):
                bad = 0
            bad_end = min(bad + chunk - 1, len(data) - 1)
            method = "PATCH"
            target = loc
            if put_last and bad_end == len(data) - 1:
                method, target = "PUT", _with_digest(loc, d)
            status, headers, _ = client.request(
                method,
                target,
                data[bad : bad_end + 1],
                {"Content-Range": f"{bad}-{bad_end}", "Content-Type": BYTES},
            )
            assert status == 416, (method, bad, bad_end, last)
            status, headers, _ = client.request("GET", loc)
            assert status == 204
            loc = headers["Location"]
            held = headers["Range"]
            assert held.startswith("0-")
            if last >= 0:
                assert int(held[2:]) == last
        start = last + 1
        last = min(start + chunk - 1, len(data) - 1)
        piece = data[start : last + 1]
        chunk_headers = {"Content-Range": f"{start}-{last}", "Content-Type": BYTES}
        if put_last and last == len(data) - 1:
            status, headers, _ = client.request("PUT", _with_digest(loc, d), piece, chunk_headers)
            created = (status, headers)
        else:
            status, headers, _ = client.request("PATCH", loc, piece, chunk_headers)
            assert status == 202
            loc = headers["Location"]
    if created is None:
        created = client.request("PUT", _with_digest(loc, d), b"")[:2]
    _created(client, created[0], created[1], d, data)
    _check_blob(client, repo, d, data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mounts(client: Client, algorithm: str) -> None:
    repo, repo2 = "conformance/repo1", "conformance/repo2"
    # mount from a named repository: 201
    data = os.urandom(512)
    d = client.push_blob(repo2, data, algorithm)
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={d}&from={repo2}")
    _created(client, status, headers, d, data)
    _delete_blob(client, repo, d)
    _delete_blob(client, repo2, d)
    # mount anonymous (no ``from``): 201 on an open registry
    data = os.urandom(512)
    d = client.push_blob(repo2, data, algorithm)
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={d}")
    _created(client, status, headers, d, data)
    # mount missing: the registry answers like an upload start (202) and the blob
    # still goes in with the PUT that follows
    data = os.urandom(512)
    d = digest_of(data, algorithm)
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={d}&from={repo2}")
    assert status == 202
    status, headers, _ = client.request("PUT", _with_digest(headers["Location"], d), data)
    _created(client, status, headers, d, data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("data", [b"", b"{}"], ids=["empty", "emptyJSON"])
def test_well_known_blobs(client: Client, algorithm: str, data: bytes) -> None:
    d = client.push_blob("conformance/repo1", data, algorithm)
    _check_blob(client, "conformance/repo1", d, data)
    _delete_blob(client, "conformance/repo1", d)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_digest_uploads_are_400(client: Client, algorithm: str) -> None:
    repo = "conformance/repo1"
    good = os.urandom(CHUNK_MIN * 3 - 5)
    d = digest_of(good, algorithm)
    bad = good + b"oh no"
    status, _, body = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", bad)
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    status, _, body = client.request("PUT", _with_digest(_start(client, repo), d), bad)
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    loc = _start(client, repo)
    status, headers, _ = client.request("PATCH", loc, iter([bad]))
    assert status == 202
    status, _, body = client.request("PUT", _with_digest(headers["Location"], d), b"")
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/{repo}/blobs/{d}")[0] == 404


# -- manifests of every kind the suite generates --------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_content_kinds_push_pull_list_delete(client: Client, algorithm: str) -> None:
    repo = "conformance/repo1"
    p = Pusher(client, repo, algorithm)
    pushed: list[tuple[str, dict[str, Any], str]] = []  # (tag, doc, digest), push order

    def put(doc: dict[str, Any], tag: str | None = None) -> str:
        digest = p.manifest(doc)
        if tag is not None:
            assert p.manifest(doc, ref=tag) == digest
        pushed.append((tag or "", doc, digest))
        return digest

    plain = p.image()
    put(plain, "image")
    put(p.image(layers=[]), "no-layers")
    empty_index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    put(empty_index, "empty-index")
    children = [p.image(), p.image()]
    for c in children:
        put(c)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [p.descriptor(c) for c in children],
        "com.example.custom": {"field": os.urandom(4).hex()},  # custom-fields
    }
    put(index, "index")
    put({**index, "manifests": [p.descriptor(index)]}, "index-of-index")
    layer = os.urandom(64)
    put(
        {
            **p.image(),
            "layers": [
                {
                    **p.blob(layer),
                    "data": base64.b64encode(layer).decode(),  # data-field
                }
            ],
        },
        "data-field",
    )
    foreign = os.urandom(32)
    put(
        {
            **p.image(),
            "layers": [
                {
                    "mediaType": OCI_LAYER_ND_GZ,
                    "digest": digest_of(foreign, algorithm),
                    "size": 123456,
                    "urls": ["https://store.example.com/blobs/" + digest_of(foreign)],
                },
                p.blob(os.urandom(100)),
            ],
        },
        "non-distributable-image",
    )
    empty = p.blob(b"{}", EMPTY)
    artifact = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": EXAMPLE_TYPE,
        "config": empty,
        "layers": [p.blob(os.urandom(64), EXAMPLE_TYPE)],
    }
    put(artifact, "artifact")
    put({**artifact, "layers": [empty]}, "artifact-without-layers")
    subject = p.descriptor(plain)
    ref1 = {**artifact, "subject": subject, "annotations": {"org.example": "1"}}
    ref2 = {
        **artifact,
        "artifactType": "application/vnd.example.other",
        "layers": [p.blob(os.urandom(64), BYTES)],
        "subject": subject,
        "annotations": {"org.example": "2"},
    }
    put(ref1, "tagged-artifact1")
    put(ref2, "tagged-artifact2")
    index_subject = p.descriptor(index)
    index_referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": EXAMPLE_TYPE,
        "manifests": [p.descriptor(artifact)],
        "subject": index_subject,
        "annotations": {"org.example": "3"},
    }
    put(index_referrer, "tagged-index-artifact")
    missing = {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(b"missing content", algorithm),
        "size": 123,
    }
    dangling = {**artifact, "subject": missing, "annotations": {"org.example": "4"}}
    put(dangling, "tagged-dangling")
    # large-manifest: just under the 4 MiB every registry SHOULD accept
    big = p.image(annotations={f"large-annotation-{i}": "A" * 10000 for i in range(390)})
    put(big, "large-manifest")

    # pull, head
    for tag, doc, digest in pushed:
        check_manifest(client, repo, digest, doc, digest)
        if tag:
            check_manifest(client, repo, tag, doc, digest)
    # tag list, with ``last``
    status, _, body = client.request("GET", f"/v2/{repo}/tags/list")
    tags = json.loads(body)["tags"]
    assert status == 200 and tags == sorted(t for t, _, _ in pushed if t)
    last = tags[len(tags) // 2 - 1]
    status, _, body = client.request("GET", f"/v2/{repo}/tags/list?last={last}")
    assert status == 200 and json.loads(body)["tags"] == tags[len(tags) // 2 :]
    status, _, body = client.request("GET", f"/v2/{repo}/tags/list?n=2&last={last}")
    assert json.loads(body)["tags"] == tags[len(tags) // 2 : len(tags) // 2 + 2]
    # referrers, with and without the artifactType filter
    for subj, expected in (
        (subject, [ref1, ref2]),
        (index_subject, [index_referrer]),
        (missing, [dangling]),
    ):
        entries = _referrers(client, repo, subj["digest"])
        for doc in expected:
            body = encode(doc)
            want = {
                "mediaType": doc["mediaType"],
                "digest": digest_of(body, algorithm),
                "size": len(body),
                "artifactType": doc["artifactType"],
            }
            assert any(
                {k: e.get(k) for k in want} == want and e["annotations"] == doc["annotations"]
                for e in entries
            ), (want, entries)
        for doc in expected:
            filtered = _referrers(client, repo, subj["digest"], doc["artifactType"])
            assert {e["artifactType"] for e in filtered} == {doc["artifactType"]}
    # delete: tags, then manifests in reverse push order, each gone at once
    for tag, _, _ in pushed:
        if tag:
            assert client.request("DELETE", f"/v2/{repo}/manifests/{tag}")[0] == 202
            assert client.request("HEAD", f"/v2/{repo}/manifests/{tag}")[0] == 404
    for _, _, digest in reversed(pushed):
        assert client.request("DELETE", f"/v2/{repo}/manifests/{digest}")[0] == 202
        assert client.request("HEAD", f"/v2/{repo}/manifests/{digest}")[0] == 404


def _referrers(
    client: Client, repo: str, digest: str, artifact_type: str | None = None
) -> list[dict[str, Any]]:
    query = f"?artifactType={quote(artifact_type, safe='')}" if artifact_type else ""
    status, headers, body = client.request("GET", f"/v2/{repo}/referrers/{digest}{query}")
    assert status == 200
    assert headers["Content-Type"] == OCI_INDEX
    if artifact_type:
        assert "artifactType" in [v.strip() for v in headers["OCI-Filters-Applied"].split(",")]
    doc = json.loads(body)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    entries: list[dict[str, Any]] = doc["manifests"]
    return entries


def test_empty_repository_answers(client: Client) -> None:
    status, _, _ = client.request("GET", "/v2/conformance/empty/tags/list")
    assert status in (200, 404)
    subject = digest_of(os.urandom(16))
    assert _referrers(client, "conformance/empty", subject) == []


def test_bad_digest_manifest_is_400(client: Client) -> None:
    p = Pusher(client, "lib/app")
    doc = p.image()
    body = encode(doc)
    digest = digest_of(body)
    status, _, answer = client.request(
        "PUT", f"/v2/lib/app/manifests/{digest}", body + b"  ", {"Content-Type": OCI_MANIFEST}
    )
    assert status == 400 and errors_of(answer) == ["DIGEST_INVALID"]
