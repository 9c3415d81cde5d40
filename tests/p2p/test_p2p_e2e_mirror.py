"""A lamina peer as a registry mirror, without a swarm (every blob from the upstream,
after the access check): ``lamina pull --mirror``, the mirrors.json setting, skopeo
through ``registries.conf``, Range and 416, passthrough of everything else, and a
private repository that the mirror's cache never opens to a client without access."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from p2p_e2e_support import (
    Image,
    Proc,
    lamina_env,
    metrics,
    origin_blob_bytes,
    push_image,
    random_layer,
    request,
    start_origin,
    start_peer,
)

from helpers.cli import LAMINA, Lamina
from lamina.registry.authn import write_htpasswd
from lamina.registry.challenges import basic_authorization

LAYER = 3 << 20


@pytest.fixture
def image(tmp_path: Path, origin: Proc) -> Image:
    digest, _ = random_layer(tmp_path / "layer.tar", LAYER)
    assert digest
    return push_image(origin.url, "app/web", tmp_path / "layer.tar")


@pytest.fixture
def peer(tmp_path: Path, origin: Proc) -> Iterator[Proc]:
    proc = start_peer(tmp_path, origin.url)
    try:
        yield proc
    finally:
        proc.stop()


def _blob(peer: Proc, image: Image, headers: dict[str, str] | None = None) -> tuple:
    return request(f"{peer.url}/v2/{image.name}/blobs/{image.layer}", headers=headers)


def test_blob_get_streams_with_headers_and_ranges(peer: Proc, image: Image) -> None:
    status, headers, body = _blob(peer, image)
    assert status == 200
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == image.layer
    assert headers["Docker-Content-Digest"] == image.layer
    assert int(headers["Content-Length"]) == image.layer_size
    status, headers, part = _blob(peer, image, {"Range": "bytes=100-1099"})
    assert status == 206 and part == body[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{image.layer_size}"
    status, _, part = _blob(peer, image, {"Range": "bytes=-10"})
    assert status == 206 and part == body[-10:]
    status, headers, _ = _blob(peer, image, {"Range": f"bytes={image.layer_size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{image.layer_size}"
    m = metrics(peer.url)
    assert m["lamina_p2p_bytes_from_source_total"] >= image.layer_size
    assert m['lamina_p2p_mirror_requests_total{kind="blob",status="200"}'] == 1


def test_everything_else_is_passed_through(peer: Proc, origin: Proc, image: Image) -> None:
    status, headers, body = request(
        f"{peer.url}/v2/{image.name}/manifests/{image.tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 200
    assert headers["Docker-Content-Digest"] == image.manifest
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == image.manifest
    status, headers, body = request(f"{peer.url}/v2/{image.name}/blobs/{image.layer}", "HEAD")
    assert status == 200 and int(headers["Content-Length"]) == image.layer_size and not body
    status, _, body = request(f"{peer.url}/v2/{image.name}/tags/list")
    assert status == 200 and json.loads(body)["tags"] == [image.tag]
    status, _, body = request(f"{peer.url}/v2/nothing/here/manifests/v1")
    assert status == 404 and b"MANIFEST_UNKNOWN" in body
    # containerd's ?ns= for a registry the peer does not mirror: refused, not fetched
    status, _, body = request(
        f"{peer.url}/v2/{image.name}/blobs/{image.layer}?ns=registry.example.com"
    )
    assert status == 404 and b"registry.example.com" in body
    # an upload through the mirror lands at the origin
    data = b"pushed through the mirror"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    status, _, body = request(f"{peer.url}/v2/other/blobs/uploads/?digest={digest}", "POST", data)
    assert status == 201, body
    status, _, body = request(f"{origin.url}/v2/other/blobs/{digest}")
    assert status == 200 and body == data


def test_lamina_pull_through_mirror(
    tmp_path: Path, lamina: Lamina, peer: Proc, origin: Proc, image: Image
) -> None:
    ref = f"{origin.hostport}/{image.name}:{image.tag}"
    before = metrics(peer.url)["lamina_p2p_bytes_served_total"]
    out = lamina("pull", "-q", "--mirror", peer.url, ref, "--json", env=lamina_env(tmp_path))
    assert json.loads(out.stdout)["manifest"] == image.manifest
    served = metrics(peer.url)["lamina_p2p_bytes_served_total"] - before
    assert served >= image.layer_size  # the layer came through the mirror


def test_mirrors_json_and_falling_back_to_the_registry(
    tmp_path: Path, lamina: Lamina, peer: Proc, origin: Proc, image: Image
) -> None:
    env = lamina_env(tmp_path)
    config = Path(env["LAMINA_CONFIG_DIR"])
    config.mkdir(parents=True)
    # a dead mirror first: skipped with a message, then the live one serves
    (config / "mirrors.json").write_text(
        json.dumps({"mirrors": {origin.hostport: ["http://127.0.0.1:9", peer.url]}})
    )
    ref = f"{origin.hostport}/{image.name}:{image.tag}"
    out = lamina("pull", "-q", ref, env=env)
    assert "mirror 127.0.0.1:9" in out.stderr
    assert metrics(peer.url)["lamina_p2p_bytes_served_total"] >= image.layer_size
    # every mirror down: the registry itself
    (config / "mirrors.json").write_text(json.dumps({"mirrors": {"*": ["http://127.0.0.1:9"]}}))
    before = origin_blob_bytes(origin.url)
    fresh = [*LAMINA, "--root", str(tmp_path / "root2"), "pull", "-q", ref]
    subprocess.run(fresh, env=env, check=True, capture_output=True, timeout=120)
    assert origin_blob_bytes(origin.url) - before >= image.layer_size


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_pulls_through_the_peer_as_mirror(
    tmp_path: Path, peer: Proc, origin: Proc, image: Image
) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{origin.hostport}"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{peer.hostport}"\ninsecure = true\n'
    )
    dest = tmp_path / "copied"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "--registries-conf",
            str(conf),
            "copy",
            f"docker://{origin.hostport}/{image.name}:{image.tag}",
            f"dir:{dest}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (dest / image.layer.split(":")[1]).stat().st_size == image.layer_size
    m = metrics(peer.url)
    assert m['lamina_p2p_mirror_requests_total{kind="blob",status="200"}'] >= 2  # layer, config
    assert m["lamina_p2p_bytes_served_total"] >= image.layer_size


# -- a private repository --------------------------------------------------------------

ALICE = basic_authorization("alice", "wonderland")
BOB = basic_authorization("bob", "builder")


@pytest.fixture
def private(tmp_path: Path) -> Iterator[tuple[Proc, Proc, Image]]:
    """An origin with basic auth where only alice may read ``secret/app``; a peer."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(str(htpasswd), {"alice": "wonderland", "bob": "builder"}, cost=4)
    acl = tmp_path / "acl.json"
    acl.write_text(
        json.dumps({"users": {"alice": {"*": ["pull", "push"]}, "bob": {"public/*": ["pull"]}}})
    )
    origin = start_origin(tmp_path / "origin", "--htpasswd", str(htpasswd), "--acl", str(acl))
    peer = None
    try:
        random_layer(tmp_path / "layer.tar", 1 << 20, seed=b"secret")
        image = push_image(origin.url, "secret/app", tmp_path / "layer.tar", auth=ALICE)
        peer = start_peer(tmp_path, origin.url)
        yield origin, peer, image
    finally:
        if peer is not None:
            peer.stop()
        origin.stop()


def test_private_blob_reaches_only_clients_the_upstream_allows(
    private: tuple[Proc, Proc, Image],
) -> None:
    _, peer, image = private
    status, _, body = _blob(peer, image, {"Authorization": ALICE})
    assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == image.layer
    # now it has been served (and, with a swarm, cached): still refused without access
    status, headers, body = _blob(peer, image)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert b"UNAUTHORIZED" in body and len(body) < 4096  # the origin's own error body
    status, _, body = _blob(peer, image, {"Authorization": BOB})
    assert status in (401, 403) and len(body) < 4096
    status, _, _ = _blob(peer, image, {"Authorization": basic_authorization("alice", "nope")})
    assert status == 401
    # alice again: the access answer is cached, no second HEAD to the origin
    checks = metrics(peer.url)["lamina_p2p_access_checks_total"]
    status, _, _ = _blob(peer, image, {"Authorization": ALICE})
    assert status == 200
    assert metrics(peer.url)["lamina_p2p_access_checks_total"] == checks
