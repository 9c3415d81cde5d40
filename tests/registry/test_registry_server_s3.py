"""The registry server over the S3 driver (a real SeaweedFS): blobs have no local path,
so reads stream from ``open_blob``; uploads, ranges, manifests and tags work the same."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import pytest

from helpers.registry_server import Client, Server
from helpers.seaweed import shared_seaweed
from lamina.registry.server import make_app
from lamina.registry.storage import open_storage

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    storage = open_storage(shared_seaweed().location())
    with Server(make_app(storage)) as server:
        yield Client(server.port)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_blobs_stream_from_s3_with_ranges(client: Client) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    digest = client.push_blob("s3/app", data)
    status, headers, body = client.request("GET", f"/v2/s3/app/blobs/{digest}")
    assert status == 200 and body == data
    status, headers, body = client.request(
        "GET", f"/v2/s3/app/blobs/{digest}", headers={"Range": "bytes=1048570-2097160"}
    )
    assert status == 206 and body == data[1048570:2097161]
    status, headers, _ = client.request("HEAD", f"/v2/s3/app/blobs/{digest}")
    assert status == 200 and headers["Content-Length"] == str(len(data))
    assert client.request("GET", f"/v2/other/blobs/{digest}")[0] == 404


def test_chunked_upload_manifest_and_tags_on_s3(client: Client) -> None:
    data = os.urandom(600_000)
    _, headers, _ = client.request("POST", "/v2/s3/chunked/blobs/uploads/")
    location = headers["Location"]
    status, headers, _ = client.request(
        "PATCH", location, data[:300_000], {"Content-Range": "0-299999"}
    )
    assert status == 202 and headers["Range"] == "0-299999"
    status, headers, _ = client.request("PATCH", location, data[:10], {"Content-Range": "0-9"})
    assert status == 416
    status, _, body = client.request("PUT", f"{location}?digest={sha256(data)}", data[300_000:])
    assert status == 201, body
    config = b'{"architecture":"amd64","os":"linux"}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": client.push_blob("s3/chunked", config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(data),
                    "size": len(data),
                }
            ],
        }
    ).encode()
    status, _, body = client.request(
        "PUT",
        "/v2/s3/chunked/manifests/v1",
        manifest,
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 201, body
    status, _, body = client.request("GET", "/v2/s3/chunked/manifests/v1")
    assert status == 200 and body == manifest
    status, _, body = client.request("GET", "/v2/s3/chunked/tags/list")
    assert json.loads(body) == {"name": "s3/chunked", "tags": ["v1"]}
