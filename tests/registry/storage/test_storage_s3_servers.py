"""Two ``lamina registry serve`` processes on one S3 store (SeaweedFS): what one accepts
the other serves, the chunks of one upload may reach either, skopeo pushes through one
and pulls through the other, and ``lamina registry gc`` collects the store."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import itertools
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers.cli import LAMINA
from helpers.seaweed import Seaweed, seaweed_env
from lamina.oci.digest import Digest
from lamina.registry.storage import open_storage

MIB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def store(seaweed: Seaweed) -> str:
    """An S3 location without keys in it: the servers take them from the environment."""
    full = seaweed.location()
    return full.split("&access_key=")[0]


@pytest.fixture
def servers(store: str, seaweed: Seaweed) -> Iterator[list[int]]:
    procs: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    try:
        for _ in range(2):
            proc = subprocess.Popen(
                [*LAMINA, "registry", "serve", "--addr", "127.0.0.1:0", "--storage", store],
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=seaweed_env(seaweed),
            )
            procs.append(proc)
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("listening on "), line + proc.stderr.read()
            ports.append(int(line.strip().rstrip("/").rsplit(":", 1)[1]))
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=30)


def _call(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.interop
def test_chunks_of_one_upload_through_two_servers(servers: list[int]) -> None:
    a, b = servers
    data = os.urandom(6 * MIB + 12345)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = _call(a, "POST", "/v2/team/app/blobs/uploads/")
    assert status == 202
    location = headers["location"]
    cuts = [0, 4 * MIB, 5 * MIB + 7, len(data)]  # the middle chunk crosses S3's 5 MiB
    for i, (start, end) in enumerate(itertools.pairwise(cuts)):
        status, headers, body = _call(
            (a, b)[i % 2],
            "PATCH",
            location,
            data[start:end],
            {"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"},
        )
        assert status == 202, body
        location = headers["location"]
    sep = "&" if "?" in location else "?"
    status, _, body = _call(b, "PUT", f"{location}{sep}digest={digest}")
    assert status == 201, body
    status, _, got = _call(a, "GET", f"/v2/team/app/blobs/{digest}")
    assert (status, got) == (200, data)
    status, headers, got = _call(
        b, "GET", f"/v2/team/app/blobs/{digest}", headers={"Range": "bytes=5242870-5242889"}
    )
    assert (status, got) == (206, data[5242870:5242890])
    # A manifest put through one is served by tag through the other.
    config = b"{}"
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    assert _call(a, "POST", f"/v2/team/app/blobs/uploads/?digest={cd}", config)[0] == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cd,
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": len(data),
                }
            ],
        }
    ).encode()
    status, _, body = _call(
        a, "PUT", "/v2/team/app/manifests/v1", manifest, {"Content-Type": OCI_MANIFEST}
    )
    assert status == 201, body
    status, _, got = _call(b, "GET", "/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert (status, got) == (200, manifest)


def _layout(root: Path) -> Path:
    """An OCI layout with one image whose layer is over 5 MiB (a multipart upload)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = os.urandom(6 * MIB)
        info = tarfile.TarInfo("noise.bin")
        info.size, info.mtime, info.mode = len(body), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(body))
    layer = blob(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))
    config = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()],
                },
            }
        ).encode()
    )
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
            }
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                **manifest,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.interop
def test_skopeo_through_two_servers_then_gc(
    servers: list[int], store: str, seaweed: Seaweed, tmp_path: Path
) -> None:
    a, b = servers
    src = _layout(tmp_path / "in")
    pushed = _skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{src}:v1", f"docker://127.0.0.1:{a}/lamina/s3:v1"
    )
    assert pushed.returncode == 0, pushed.stderr
    out = tmp_path / "out"
    pulled = _skopeo(
        "copy", "--src-tls-verify=false", f"docker://127.0.0.1:{b}/lamina/s3:v1", f"oci:{out}:v1"
    )
    assert pulled.returncode == 0, pulled.stderr
    for blob in (src / "blobs" / "sha256").iterdir():
        assert (out / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()
    inspected = _skopeo("inspect", "--tls-verify=false", f"docker://127.0.0.1:{b}/lamina/s3:v1")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Architecture"] == "amd64"

    # An orphan, then `lamina registry gc` on the S3 store, from the command line.
    storage = open_storage(seaweed.location(urlsplit(store).path.strip("/")))
    uuid = storage.start_upload("lamina/s3")
    storage.append_upload("lamina/s3", uuid, [b"orphan"])
    orphan = storage.finish_upload(
        "lamina/s3", uuid, Digest("sha256", hashlib.sha256(b"orphan").hexdigest())
    )

    def gc(*extra: str) -> dict[str, object]:
        proc = subprocess.run(
            [*LAMINA, "registry", "gc", "--storage", store, "--json", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=seaweed_env(seaweed),
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        report: dict[str, object] = json.loads(proc.stdout)
        return report

    assert gc()["deleted_blobs"] == []  # the orphan is young
    assert gc("--grace", "0", "--dry-run")["deleted_blobs"] == [str(orphan)]
    assert gc("--grace", "0")["deleted_blobs"] == [str(orphan)]
    assert sorted(str(d) for d in storage.iter_blobs()) == sorted(
        f"sha256:{p.name}" for p in (src / "blobs" / "sha256").iterdir()
    )
    again = _skopeo(
        "copy",
        "--src-tls-verify=false",
        f"docker://127.0.0.1:{a}/lamina/s3:v1",
        f"oci:{tmp_path / 'again'}:v1",
    )
    assert again.returncode == 0, again.stderr
