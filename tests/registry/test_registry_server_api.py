"""The registry server over real HTTP on loopback: every endpoint of the OCI Distribution
Spec v1.1 and its status codes. The server runs in a thread of this process (its own
event loop), the filesystem driver under tmp_path; requests go through http.client."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.registry_server import Client, Server
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY = "application/vnd.oci.empty.v1+json"
BYTES = "application/octet-stream"


def errors_of(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def storage(tmp_path: Path) -> FilesystemStorage:
    return FilesystemStorage(tmp_path / "registry")


@pytest.fixture
def client(storage: FilesystemStorage) -> Iterator[Client]:
    with Server(make_app(storage)) as server:
        yield Client(server.port)


def image(client: Client, name: str, layers: int = 2, seed: bytes = b"") -> dict[str, Any]:
    """Push a config and ``layers`` blobs; return a manifest document for them."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed.hex()}).encode()
    layer_blobs = [os.urandom(100 + i) for i in range(layers)]
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": client.push_blob(name, config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": OCI_LAYER, "digest": client.push_blob(name, b), "size": len(b)}
            for b in layer_blobs
        ],
    }


# -- base, routing -------------------------------------------------------------------


def test_base_answers_with_api_version(client: Client) -> None:
    status, headers, body = client.request("GET", "/v2/")
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert json.loads(body) == {}


def test_unknown_path_and_wrong_method(client: Client) -> None:
    status, _, body = client.request("GET", "/v2/a/nothing/here")
    assert status == 404 and errors_of(body) == ["UNSUPPORTED"]
    status, headers, _ = client.request("POST", "/v2/a/manifests/latest")
    assert status == 405
    assert "PUT" in headers["Allow"]


def test_bad_names_and_digests_are_refused_before_storage(
    client: Client, storage: FilesystemStorage
) -> None:
    status, _, body = client.request("GET", "/v2/UPPER/tags/list")
    assert status == 400 and errors_of(body) == ["NAME_INVALID"]
    status, _, body = client.request("GET", "/v2/a/../b/tags/list")
    assert status in (400, 404)
    status, _, body = client.request("HEAD", "/v2/a/blobs/sha256:1234")
    assert status == 400
    status, _, body = client.request("GET", "/v2/a/blobs/md5:" + "0" * 32)
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    status, _, body = client.request("POST", "/v2/a/blobs/uploads/?digest=sha256:zz", b"x")
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    assert storage.list_repositories() == []
    assert list(storage.iter_uploads()) == []


# -- blobs ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_monolithic_push_head_get_and_ranges(client: Client, algorithm: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = client.push_blob("lib/app", data, algorithm)
    status, headers, body = client.request("HEAD", f"/v2/lib/app/blobs/{digest}")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(data))
    assert headers["Docker-Content-Digest"] == digest
    status, headers, body = client.request("GET", f"/v2/lib/app/blobs/{digest}")
    assert status == 200 and body == data
    status, headers, body = client.request(
        "GET", f"/v2/lib/app/blobs/{digest}", headers={"Range": "bytes=1000-1999999"}
    )
    assert status == 206 and body == data[1000:2000000]
    assert headers["Content-Range"] == f"bytes 1000-1999999/{len(data)}"
    status, headers, body = client.request(
        "GET", f"/v2/lib/app/blobs/{digest}", headers={"Range": "bytes=-10"}
    )
    assert status == 206 and body == data[-10:]
    status, headers, body = client.request(
        "GET", f"/v2/lib/app/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"}
    )
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(data)}"


def test_blob_unknown_and_not_linked_in_other_repo(client: Client) -> None:
    digest = client.push_blob("a", b"only in a")
    status, _, body = client.request("GET", f"/v2/b/blobs/{digest}")
    assert status == 404 and errors_of(body) == ["BLOB_UNKNOWN"]
    status, _, body = client.request("HEAD", f"/v2/b/blobs/{digest}")
    assert status == 404 and body == b""


def test_mismatching_digest_is_refused_and_nothing_visible(
    client: Client, storage: FilesystemStorage
) -> None:
    wrong = sha256(b"something else")
    status, _, body = client.request("POST", f"/v2/a/blobs/uploads/?digest={wrong}", b"payload")
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/a/blobs/{wrong}")[0] == 404
    assert client.request("HEAD", f"/v2/a/blobs/{sha256(b'payload')}")[0] == 404
    assert list(storage.iter_blobs()) == []
    assert list(storage.iter_uploads()) == []


def test_post_then_put(client: Client) -> None:
    status, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    assert status == 202
    location = headers["Location"]
    assert headers["Range"] == "0-0"
    data = b"x" * 5000
    status, headers, body = client.request(
        "PUT",
        f"{location}?digest={sha256(data)}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    assert status == 201, body
    assert headers["Location"] == f"/v2/a/blobs/{sha256(data)}"
    assert headers["Docker-Content-Digest"] == sha256(data)
    assert client.request("GET", f"/v2/a/blobs/{sha256(data)}")[2] == data


def test_chunked_upload_in_order_out_of_order_status_and_final_chunk(client: Client) -> None:
    data = os.urandom(300_000)
    status, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    location = headers["Location"]
    status, headers, _ = client.request(
        "PATCH", location, data[:100_000], {"Content-Range": "0-99999"}
    )
    assert status == 202 and headers["Range"] == "0-99999"
    assert headers["Location"] == location
    # a chunk that does not start at the current offset: 416 with the held Range
    status, headers, body = client.request(
        "PATCH", location, data[200_000:], {"Content-Range": "200000-299999"}
    )
    assert status == 416 and headers["Range"] == "0-99999"
    status, headers, _ = client.request("GET", location)
    assert status == 204 and headers["Range"] == "0-99999"
    status, headers, _ = client.request(
        "PATCH", location, data[100_000:200_000], {"Content-Range": "100000-199999"}
    )
    assert status == 202 and headers["Range"] == "0-199999"
    status, headers, body = client.request(
        "PUT",
        f"{location}?digest={sha256(data)}",
        data[200_000:],
        {"Content-Range": "200000-299999"},
    )
    assert status == 201, body
    assert client.request("GET", f"/v2/a/blobs/{sha256(data)}")[2] == data
    # the session is closed
    status, _, body = client.request("GET", location)
    assert status == 404 and errors_of(body) == ["BLOB_UPLOAD_UNKNOWN"]


def test_streamed_patch_without_length(client: Client) -> None:
    pieces = [os.urandom(700_000) for _ in range(6)]
    data = b"".join(pieces)
    _, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    location = headers["Location"]
    status, headers, body = client.request("PATCH", location, iter(pieces))
    assert status == 202, body
    assert headers["Range"] == f"0-{len(data) - 1}"
    status, _, body = client.request("PUT", f"{location}?digest={sha256(data)}")
    assert status == 201, body
    assert client.request("GET", f"/v2/a/blobs/{sha256(data)}")[2] == data


def test_finish_with_wrong_digest_discards_the_session(client: Client) -> None:
    _, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    location = headers["Location"]
    client.request("PATCH", location, b"abc", {"Content-Range": "0-2"})
    status, _, body = client.request("PUT", f"{location}?digest={sha256(b'abd')}")
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/a/blobs/{sha256(b'abc')}")[0] == 404
    assert client.request("GET", location)[0] == 404


def test_cancel_upload(client: Client) -> None:
    _, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    location = headers["Location"]
    assert client.request("DELETE", location)[0] == 204
    status, _, body = client.request("GET", location)
    assert status == 404 and errors_of(body) == ["BLOB_UPLOAD_UNKNOWN"]
    assert client.request("DELETE", location)[0] == 404
    # an upload id of another repository is unknown here
    _, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
    other = headers["Location"].replace("/v2/a/", "/v2/b/")
    assert client.request("GET", other)[0] == 404


def test_cross_repository_mount(client: Client) -> None:
    digest = client.push_blob("src/repo", b"shared layer")
    status, headers, _ = client.request(
        "POST", f"/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"
    )
    assert status == 201
    assert headers["Location"] == f"/v2/dst/repo/blobs/{digest}"
    assert headers["Docker-Content-Digest"] == digest
    assert client.request("GET", f"/v2/dst/repo/blobs/{digest}")[2] == b"shared layer"
    # unknown blob, or a source that does not hold it: a 202 upload instead
    unknown = sha256(b"nobody has this")
    status, headers, _ = client.request(
        "POST", f"/v2/dst/repo/blobs/uploads/?mount={unknown}&from=src/repo"
    )
    assert status == 202 and "/blobs/uploads/" in headers["Location"]
    status, _, _ = client.request("POST", f"/v2/third/blobs/uploads/?mount={digest}&from=elsewhere")
    assert status == 202


def test_blob_delete(client: Client) -> None:
    digest = client.push_blob("a", b"to delete")
    status, _, _ = client.request("DELETE", f"/v2/a/blobs/{digest}")
    assert status == 202
    assert client.request("HEAD", f"/v2/a/blobs/{digest}")[0] == 404
    status, _, body = client.request("DELETE", f"/v2/a/blobs/{digest}")
    assert status == 404 and errors_of(body) == ["BLOB_UNKNOWN"]


def test_chunk_min_length_is_announced(storage: FilesystemStorage) -> None:
    with Server(make_app(storage, chunk_min_length=1 << 20)) as server:
        status, headers, _ = Client(server.port).request("POST", "/v2/a/blobs/uploads/")
    assert status == 202
    assert headers["OCI-Chunk-Min-Length"] == str(1 << 20)


# -- manifests -----------------------------------------------------------------------


def test_manifest_push_needs_its_blobs(client: Client) -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"cfg"), "size": 3},
        "layers": [],
    }
    status, _, body = client.put_manifest("a", "v1", doc)
    assert status == 404 and errors_of(body) == ["MANIFEST_BLOB_UNKNOWN"]


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_manifest_put_get_head_by_tag_and_digest(client: Client, media_type: str) -> None:
    doc = image(client, "lib/app")
    doc["mediaType"] = media_type
    if media_type == DOCKER_MANIFEST:
        doc["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
        for layer in doc["layers"]:
            layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    raw = json.dumps(doc).encode()
    digest = sha256(raw)
    status, headers, body = client.request(
        "PUT", "/v2/lib/app/manifests/v1", raw, {"Content-Type": media_type}
    )
    assert status == 201, body
    assert headers["Docker-Content-Digest"] == digest
    assert headers["Location"] == f"/v2/lib/app/manifests/{digest}"
    for ref in ("v1", digest):
        status, headers, body = client.request("GET", f"/v2/lib/app/manifests/{ref}")
        assert status == 200 and body == raw
        assert headers["Content-Type"] == media_type
        assert headers["Docker-Content-Digest"] == digest
        status, headers, body = client.request("HEAD", f"/v2/lib/app/manifests/{ref}")
        assert status == 200 and body == b""
        assert headers["Content-Length"] == str(len(raw))
    status, _, body = client.request("GET", "/v2/lib/app/manifests/v2")
    assert status == 404 and errors_of(body) == ["MANIFEST_UNKNOWN"]


def test_manifest_put_by_digest_checks_the_digest(client: Client) -> None:
    raw = json.dumps(image(client, "a")).encode()
    status, _, body = client.request(
        "PUT", f"/v2/a/manifests/{sha256(b'other')}", raw, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 400 and errors_of(body) == ["DIGEST_INVALID"]
    status, _, body = client.request(
        "PUT", f"/v2/a/manifests/{sha256(raw)}", raw, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 201, body


def test_invalid_and_oversized_manifests(client: Client) -> None:
    status, _, body = client.request(
        "PUT", "/v2/a/manifests/x", b"{not json", {"Content-Type": OCI_MANIFEST}
    )
    assert status == 400 and errors_of(body) == ["MANIFEST_INVALID"]
    status, _, body = client.request(
        "PUT", "/v2/a/manifests/x", b"{}", {"Content-Type": "text/plain"}
    )
    assert status == 400 and errors_of(body) == ["MANIFEST_INVALID"]
    huge = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
    status, _, body = client.request(
        "PUT", "/v2/a/manifests/x", huge, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 413 and errors_of(body) == ["SIZE_INVALID"]
    # streamed without Content-Length: refused once the cap is passed
    status, _, body = client.request(
        "PUT",
        "/v2/a/manifests/x",
        iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)]),
        {"Content-Type": OCI_MANIFEST},
    )
    assert status == 413


def test_index_needs_its_manifests(client: Client) -> None:
    children = []
    for arch in ("amd64", "arm64"):
        raw = json.dumps(image(client, "multi", seed=arch.encode())).encode()
        children.append((arch, raw))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(raw),
                "size": len(raw),
                "platform": {"architecture": arch, "os": "linux"},
            }
            for arch, raw in children
        ],
    }
    status, _, body = client.put_manifest("multi", "latest", index, OCI_INDEX)
    assert status == 404 and errors_of(body) == ["MANIFEST_BLOB_UNKNOWN"]
    for _, raw in children:
        status, _, _ = client.request(
            "PUT", f"/v2/multi/manifests/{sha256(raw)}", raw, {"Content-Type": OCI_MANIFEST}
        )
        assert status == 201
    status, _, body = client.put_manifest("multi", "latest", index, OCI_INDEX)
    assert status == 201, body
    status, headers, _ = client.request("GET", "/v2/multi/manifests/latest")
    assert status == 200 and headers["Content-Type"] == OCI_INDEX


def test_manifest_and_tag_deletes(client: Client) -> None:
    raw = json.dumps(image(client, "a")).encode()
    digest = sha256(raw)
    client.request("PUT", "/v2/a/manifests/one", raw, {"Content-Type": OCI_MANIFEST})
    client.request("PUT", "/v2/a/manifests/two", raw, {"Content-Type": OCI_MANIFEST})
    assert client.request("DELETE", "/v2/a/manifests/one")[0] == 202
    assert client.request("GET", "/v2/a/manifests/one")[0] == 404
    assert client.request("GET", "/v2/a/manifests/two")[0] == 200
    assert client.request("DELETE", f"/v2/a/manifests/{digest}")[0] == 202
    status, _, body = client.request("GET", f"/v2/a/manifests/{digest}")
    assert status == 404 and errors_of(body) == ["MANIFEST_UNKNOWN"]
    assert client.request("GET", "/v2/a/manifests/two")[0] == 404
    status, _, body = client.request("DELETE", f"/v2/a/manifests/{digest}")
    assert status == 404 and errors_of(body) == ["MANIFEST_UNKNOWN"]


# -- artifacts and referrers -----------------------------------------------------------


def test_referrers_with_subject_and_artifact_type_filter(client: Client) -> None:
    raw = json.dumps(image(client, "a")).encode()
    subject = sha256(raw)
    client.request("PUT", "/v2/a/manifests/v1", raw, {"Content-Type": OCI_MANIFEST})
    empty = client.push_blob("a", b"{}")
    digests = {}
    for kind in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        payload = client.push_blob("a", kind.encode())
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": empty,
                "size": 2,
            },
            "layers": [
                {"mediaType": "application/octet-stream", "digest": payload, "size": len(kind)}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(raw)},
            "annotations": {"org.example.kind": kind},
        }
        art = json.dumps(doc).encode()
        status, headers, body = client.request(
            "PUT", f"/v2/a/manifests/{sha256(art)}", art, {"Content-Type": OCI_MANIFEST}
        )
        assert status == 201, body
        assert headers["OCI-Subject"] == subject
        digests[kind] = sha256(art)
    status, headers, body = client.request("GET", f"/v2/a/referrers/{subject}")
    assert status == 200 and headers["Content-Type"] == OCI_INDEX
    found = {m["digest"]: m for m in json.loads(body)["manifests"]}
    assert set(found) == set(digests.values())
    sbom = found[digests["application/vnd.example.sbom"]]
    assert sbom["artifactType"] == "application/vnd.example.sbom"
    assert sbom["annotations"] == {"org.example.kind": "application/vnd.example.sbom"}
    assert "OCI-Filters-Applied" not in headers
    status, headers, body = client.request(
        "GET", f"/v2/a/referrers/{subject}?artifactType=application/vnd.example.sig"
    )
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in json.loads(body)["manifests"]] == [
        digests["application/vnd.example.sig"]
    ]
    # unknown subject or repository: an empty index, never 404
    for path in (f"/v2/a/referrers/{sha256(b'x')}", f"/v2/nowhere/referrers/{subject}"):
        status, _, body = client.request("GET", path)
        assert status == 200 and json.loads(body)["manifests"] == []


# -- listings ------------------------------------------------------------------------


def test_tags_list_pagination(client: Client) -> None:
    raw = json.dumps(image(client, "a", layers=1)).encode()
    tags = ["b", "a", "d", "c", "e"]
    for tag in tags:
        client.request("PUT", f"/v2/a/manifests/{tag}", raw, {"Content-Type": OCI_MANIFEST})
    status, headers, body = client.request("GET", "/v2/a/tags/list")
    assert status == 200 and json.loads(body) == {"name": "a", "tags": sorted(tags)}
    assert "Link" not in headers
    status, headers, body = client.request("GET", "/v2/a/tags/list?n=2")
    assert json.loads(body)["tags"] == ["a", "b"]
    assert headers["Link"] == '</v2/a/tags/list?n=2&last=b>; rel="next"'
    status, headers, body = client.request("GET", "/v2/a/tags/list?n=2&last=b")
    assert json.loads(body)["tags"] == ["c", "d"]
    status, headers, body = client.request("GET", "/v2/a/tags/list?n=2&last=d")
    assert json.loads(body)["tags"] == ["e"] and "Link" not in headers
    status, _, body = client.request("GET", "/v2/a/tags/list?n=0")
    assert json.loads(body)["tags"] == []
    status, _, body = client.request("GET", "/v2/unknown/tags/list")
    assert status == 404 and errors_of(body) == ["NAME_UNKNOWN"]


def test_catalog_pagination(client: Client) -> None:
    for name in ("z/one", "a/two", "m"):
        client.push_blob(name, b"x")
    status, headers, body = client.request("GET", "/v2/_catalog")
    assert status == 200 and json.loads(body) == {"repositories": ["a/two", "m", "z/one"]}
    status, headers, body = client.request("GET", "/v2/_catalog?n=1")
    assert json.loads(body) == {"repositories": ["a/two"]}
    assert headers["Link"] == '</v2/_catalog?n=1&last=a%2Ftwo>; rel="next"'
    status, _, body = client.request("GET", "/v2/_catalog?n=5&last=m")
    assert json.loads(body) == {"repositories": ["z/one"]}


# -- metrics and expiry ----------------------------------------------------------------


def test_metrics_count_requests_bytes_and_latency(client: Client) -> None:
    digest = client.push_blob("a", b"12345")
    client.request("GET", f"/v2/a/blobs/{digest}")
    client.request("GET", "/v2/a/blobs/sha256:" + "0" * 64)
    status, headers, body = client.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'lamina_registry_requests_total{method="GET",route="end-2",status="200"} 1' in text
    assert 'lamina_registry_requests_total{method="GET",route="end-2",status="404"} 1' in text
    assert 'lamina_registry_requests_total{method="POST",route="end-4b",status="201"} 1' in text
    assert 'lamina_registry_sent_bytes_total{route="end-2"} 5' in text
    assert 'lamina_registry_received_bytes_total{route="end-4b"} 5' in text
    assert 'lamina_registry_request_duration_seconds_count{route="end-2"} 2' in text
    assert 'lamina_registry_request_duration_seconds_bucket{route="end-2",le="+Inf"} 2' in text


def test_stale_upload_sessions_expire(storage: FilesystemStorage) -> None:
    app = make_app(storage, upload_ttl=0.3, expiry_interval=0.1)
    with Server(app) as server:
        client = Client(server.port)
        _, headers, _ = client.request("POST", "/v2/a/blobs/uploads/")
        stale = headers["Location"]
        client.request("PATCH", stale, b"abc")
        deadline = time.monotonic() + 10
        while client.request("GET", stale)[0] != 404:
            assert time.monotonic() < deadline, "the stale session never expired"
            time.sleep(0.1)
        assert list(storage.iter_uploads()) == []
