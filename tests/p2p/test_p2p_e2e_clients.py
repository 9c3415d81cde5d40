"""Clients of a lamina peer other than ``lamina pull``: containerd (``ctr images pull
--hosts-dir`` with a ``hosts.toml`` naming the peer as a pull/resolve host) and
``lamina p2p get`` (one verified blob through the peer, like dfget)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from p2p_e2e_support import (
    Image,
    Proc,
    file_digest,
    metrics,
    push_image,
    random_layer,
    start_origin,
    start_peer,
)

from helpers.cli import Lamina
from helpers.containerd import private_containerd

LAYER = 2 << 20


@pytest.fixture
def swarmless(tmp_path: Path) -> Iterator[tuple[Proc, Proc, Image]]:
    origin = start_origin(tmp_path / "origin")
    peer = None
    try:
        random_layer(tmp_path / "layer.tar", LAYER, seed=b"clients")
        image = push_image(origin.url, "app/tool", tmp_path / "layer.tar")
        peer = start_peer(tmp_path, origin.url)
        yield origin, peer, image
    finally:
        if peer is not None:
            peer.stop()
        origin.stop()


def test_p2p_get_fetches_one_verified_blob(
    tmp_path: Path, lamina: Lamina, swarmless: tuple[Proc, Proc, Image]
) -> None:
    origin, peer, image = swarmless
    out = tmp_path / "by-name"
    lamina("p2p", "get", f"{image.name}@{image.layer}", "-o", str(out), "--peer", peer.url)
    assert file_digest(out) == image.layer
    url = f"http://{origin.hostport}/v2/{image.name}/blobs/{image.config}"
    lamina("p2p", "get", url, "-o", str(tmp_path / "by-url"), "--peer", peer.url, "-q")
    assert file_digest(tmp_path / "by-url") == image.config
    missing = "sha256:" + "0" * 64
    proc = lamina(
        "p2p", "get", f"{image.name}@{missing}", "-o", str(tmp_path / "x"),
        "--peer", peer.url, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "error:" in proc.stderr
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial"))
    served = metrics(peer.url)["lamina_p2p_bytes_served_total"]
    assert served >= image.layer_size


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[str]:
    with private_containerd(tmp_path) as sock:
        yield sock


@pytest.mark.interop
@pytest.mark.root
@pytest.mark.skipif(
    shutil.which("containerd") is None or shutil.which("ctr") is None,
    reason="containerd not installed",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root")
def test_containerd_pulls_through_the_peer_with_hosts_toml(
    tmp_path: Path, containerd: str, swarmless: tuple[Proc, Proc, Image]
) -> None:
    origin, peer, image = swarmless
    hosts = tmp_path / "certs.d" / origin.hostport
    hosts.mkdir(parents=True)
    # the layout docs/p2p.md gives: the peer first (pull and resolve), the origin after
    (hosts / "hosts.toml").write_text(
        f'server = "http://{origin.hostport}"\n\n'
        f'[host."{peer.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    ref = f"{origin.hostport}/{image.name}:{image.tag}"
    ctr = ["ctr", "-a", containerd, "-n", "lamina-p2p"]
    pull = subprocess.run(
        [*ctr, "images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), ref],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pull.returncode == 0, pull.stderr + pull.stdout
    check = subprocess.run([*ctr, "images", "check"], capture_output=True, text=True, check=True)
    assert "complete" in check.stdout
    m = metrics(peer.url)
    # containerd asked the peer with ?ns=<origin>: the blobs came through the P2P path
    assert m['lamina_p2p_mirror_requests_total{kind="blob",status="200"}'] >= 2
    assert m["lamina_p2p_bytes_served_total"] >= image.layer_size
