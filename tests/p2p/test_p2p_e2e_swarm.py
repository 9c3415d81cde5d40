"""The swarm end to end, real processes on loopback: ``lamina registry serve`` as the
origin (its /metrics counts the blob bytes it sends), ``lamina p2p scheduler``, eight
``lamina p2p peer``s, ``lamina pull --mirror`` through each one's own peer. Faults: a
parent killed mid-transfer, a parent serving corrupt pieces, the scheduler restarted,
the origin's blobs gone after the swarm has them, two schedulers over one Redis,
clients without access, processes without a swarm token."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from p2p_e2e_support import (
    Image,
    Proc,
    Swarm,
    corrupt_cached,
    finish,
    free_port,
    metrics,
    origin_blob_bytes,
    pull,
    push_image,
    random_layer,
    request,
    start_origin,
)

from helpers.cli import LAMINA
from lamina.p2p import tokens
from lamina.p2p.pieces import piece_length
from lamina.registry.authn import write_htpasswd
from lamina.registry.challenges import basic_authorization

sys.path.insert(0, str(Path(__file__).parents[1] / "registry"))
from registry_client_support import Fault, Proxy

LAYER = 64 << 20
FROM_SOURCE = "lamina_p2p_bytes_from_source_total"
FROM_PEERS = "lamina_p2p_bytes_from_peers_total"


@pytest.fixture(scope="module")
def layer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layer") / "layer.tar"
    random_layer(path, LAYER, seed=b"swarm")
    return path


@pytest.fixture
def image(origin: Proc, layer_file: Path) -> Image:
    return push_image(origin.url, "swarm/app", layer_file)


@pytest.fixture
def swarm(tmp_path: Path, origin: Proc) -> Iterator[Swarm]:
    s = Swarm.make(tmp_path, origin.url)
    try:
        yield s
    finally:
        s.stop()


def _ref(origin: Proc, image: Image) -> str:
    return f"{origin.hostport}/{image.name}:{image.tag}"


def test_eight_peers_one_origin_send(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image
) -> None:
    swarm.start_scheduler()
    peers = [swarm.start_peer() for _ in range(8)]
    ref = _ref(origin, image)
    first = finish(pull(tmp_path, peers[0], ref, "0"))
    assert first["manifest"] == image.manifest
    rest = [pull(tmp_path, p, ref, str(i)) for i, p in enumerate(peers[1:], 1)]
    for proc in rest:
        assert finish(proc)["manifest"] == image.manifest  # verified by lamina's pull
    sent = origin_blob_bytes(origin.url)
    config = image.blobs[image.config]
    assert sent <= LAYER * 1.05 + 8 * config, f"the origin sent {sent / LAYER:.2f}x the layer"
    for i, peer in enumerate(peers[1:], 1):
        m = metrics(peer.url)
        assert m[FROM_PEERS] >= LAYER / 2, f"peer {i}: {m[FROM_PEERS]} bytes from peers"
        assert m[FROM_PEERS] > m[FROM_SOURCE], f"peer {i}: {m}"
    # lamina p2p status: the layer's task, with most bytes from peers
    cmd = [*LAMINA, "p2p", "status", "--scheduler", swarm.schedulers[0].url,
           "--swarm-key", str(swarm.key)]  # fmt: skip
    doc = json.loads(subprocess.run([*cmd, "--json"], capture_output=True, text=True,
                                    check=True).stdout)  # fmt: skip
    task = next(t for t in doc["tasks"] if t["task"] == image.layer)
    assert task["bytes_from_peers"] >= 6 * LAYER and len(doc["hosts"]) == 8
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "8 peer(s)" in text and image.layer[:19] in text


def _slow_pulls(tmp: Path, swarm: Swarm, ref: str, n: int) -> list[subprocess.Popen[str]]:
    peers = [swarm.start_peer("--download-limit", "16MiB") for _ in range(n)]
    return [pull(tmp, p, ref, f"slow{i}") for i, p in enumerate(peers)]


def test_parent_killed_mid_transfer(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image
) -> None:
    swarm.start_scheduler()
    a, b = swarm.start_peer(), swarm.start_peer()
    ref = _ref(origin, image)
    finish(pull(tmp_path, a, ref, "a"))
    finish(pull(tmp_path, b, ref, "b"))
    pulls = _slow_pulls(tmp_path, swarm, ref, 3)
    time.sleep(2)
    a.kill()
    for proc in pulls:
        assert finish(proc)["manifest"] == image.manifest
    # b still had it: nobody went back to the origin for the layer
    assert origin_blob_bytes(origin.url) <= LAYER * 1.05 + 8 * image.blobs[image.config]


def test_corrupt_parent_is_detected_and_nothing_corrupt_reaches_a_client(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image
) -> None:
    swarm.start_scheduler()
    bad = swarm.start_peer()
    ref = _ref(origin, image)
    finish(pull(tmp_path, bad, ref, "bad"))
    length = piece_length(image.layer_size)
    cache = tmp_path / "peer0" / "cache"
    assert corrupt_cached(cache, image.layer_size, 3 * length + 100) >= 1
    child = swarm.start_peer()
    assert finish(pull(tmp_path, child, ref, "child"))["manifest"] == image.manifest
    m = metrics(child.url)
    assert m.get("lamina_p2p_pieces_corrupt_total", 0) >= 1, m
    # and the blob the child serves is intact
    status, _, body = request(f"{child.url}/v2/{image.name}/blobs/{image.layer}")
    assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == image.layer


def test_scheduler_restarted_mid_swarm(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image
) -> None:
    port = free_port()
    sched = swarm.start_scheduler(port=port)
    seed = swarm.start_peer("--seed")
    ref = _ref(origin, image)
    finish(pull(tmp_path, seed, ref, "seed"))
    pulls = _slow_pulls(tmp_path, swarm, ref, 3)
    time.sleep(1.5)
    sched.kill()
    time.sleep(1)
    sched.start()
    for proc in pulls:
        assert finish(proc)["manifest"] == image.manifest
    logs = "".join(p.logs() for p in swarm.peers)
    # each peer either re-registered or fell back to the origin and said so
    assert "scheduler" in logs


def test_origin_gone_after_the_seed_has_the_blob(
    tmp_path: Path, origin: Proc, image: Image
) -> None:
    # the peers see the origin through a proxy that can refuse blob GETs: manifests and
    # access checks (HEAD) still answer, the blob bytes no longer come
    proxy = Proxy(origin.hostport).start()
    swarm = Swarm.make(tmp_path, f"http://{proxy.host}")
    try:
        swarm.start_scheduler()
        seed = swarm.start_peer("--seed")
        ref = f"{proxy.host}/{image.name}:{image.tag}"
        finish(pull(tmp_path, seed, ref, "seed"))
        proxy.faults.append(Fault("GET", "/blobs/sha256:", after=0, count=10_000, status=503))
        pulls = [pull(tmp_path, swarm.start_peer(), ref, f"p{i}") for i in range(3)]
        for proc in pulls:
            assert finish(proc)["manifest"] == image.manifest
        got = [r for r in proxy.requests if r[0] == "GET" and "/blobs/" in r[1] and r[2] < 300]
        assert len(got) <= len(image.blobs), got  # only the seed's fetches (layer, config)
    finally:
        swarm.stop()
        proxy.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_two_schedulers_over_one_redis_serve_one_swarm(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image, redis_url: str
) -> None:
    a = swarm.start_scheduler("--redis", redis_url)
    b = swarm.start_scheduler("--redis", redis_url)
    first = swarm.start_peer(scheduler=a)
    ref = _ref(origin, image)
    finish(pull(tmp_path, first, ref, "first"))
    others = [swarm.start_peer(scheduler=b) for _ in range(3)]
    for proc in [pull(tmp_path, p, ref, f"b{i}") for i, p in enumerate(others)]:
        assert finish(proc)["manifest"] == image.manifest
    assert origin_blob_bytes(origin.url) <= LAYER * 1.05 + 8 * image.blobs[image.config]
    for peer in others:  # scheduler b knew what a's peer held
        assert metrics(peer.url)[FROM_PEERS] >= LAYER / 2


def test_no_piece_without_a_swarm_token(
    tmp_path: Path, swarm: Swarm, origin: Proc, image: Image
) -> None:
    swarm.start_scheduler()
    peer = swarm.start_peer()
    finish(pull(tmp_path, peer, _ref(origin, image), "p"))
    task = image.layer
    for path in (f"/p2p/v1/tasks/{task}/pieces/0", f"/p2p/v1/tasks/{task}/bitfield"):
        status, _, body = request(f"{peer.url}{path}")
        assert status == 401 and len(body) < 4096
        forged = tokens.mint(b"not the swarm's key, 32 bytes..", task, time.time())
        status, _, body = request(f"{peer.url}{path}", headers={"Authorization": f"Swarm {forged}"})
        assert status == 403 and len(body) < 4096
        other = tokens.mint(swarm.key.read_bytes(), image.config, time.time())
        status, _, _ = request(f"{peer.url}{path}", headers={"Authorization": f"Swarm {other}"})
        assert status == 403
    good = tokens.mint(swarm.key.read_bytes(), task, time.time())
    status, _, body = request(
        f"{peer.url}/p2p/v1/tasks/{task}/pieces/0", headers={"Authorization": f"Swarm {good}"}
    )
    assert status == 200 and len(body) == piece_length(image.layer_size)  # the gate, not a wall
    # the scheduler itself refuses a host without the join token
    status, _, _ = request(
        f"{swarm.schedulers[0].url}/v1/hosts", "POST",
        json.dumps({"host_id": "x", "addr": "http://127.0.0.1:1"}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 401


ALICE = basic_authorization("alice", "wonderland")


def test_cached_private_blob_refused_to_a_client_without_access(
    tmp_path: Path, layer_file: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(str(htpasswd), {"alice": "wonderland", "bob": "builder"}, cost=4)
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({"users": {"alice": {"*": ["pull", "push"]}, "bob": {}}}))
    origin = start_origin(tmp_path / "origin", "--htpasswd", str(htpasswd), "--acl", str(acl))
    swarm = Swarm.make(tmp_path, origin.url)
    try:
        small = tmp_path / "small.tar"
        random_layer(small, 6 << 20, seed=b"private")
        image = push_image(origin.url, "secret/app", small, auth=ALICE)
        swarm.start_scheduler()
        holder, other = swarm.start_peer(), swarm.start_peer()
        url = f"/v2/{image.name}/blobs/{image.layer}"
        status, _, body = request(f"{holder.url}{url}", headers={"Authorization": ALICE})
        assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == image.layer
        for peer in (holder, other):  # the holder has it cached; the other could fetch it
            status, headers, body = request(f"{peer.url}{url}")
            assert status == 401 and "WWW-Authenticate" in headers
            assert hashlib.sha256(body).hexdigest() not in image.layer
            bob = basic_authorization("bob", "builder")
            status, _, body = request(f"{peer.url}{url}", headers={"Authorization": bob})
            assert status in (401, 403) and len(body) < 4096
        status, _, body = request(f"{other.url}{url}", headers={"Authorization": ALICE})
        assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == image.layer
    finally:
        swarm.stop()
        origin.stop()
