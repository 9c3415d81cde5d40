"""containerd pulls from lamina's registry: ``ctr images pull --plain-http`` against a
containerd started by the test with its own root, state dir and socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import LAMINA
from helpers.containerd import private_containerd
from helpers.registry_server import Client, Server
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("containerd") is None or shutil.which("ctr") is None,
        reason="containerd not installed",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
]


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[str]:
    with private_containerd(tmp_path) as sock:
        yield sock


def push_layout(client: Client, layout: Path, name: str, tag: str) -> str:
    """Push every blob of an OCI layout, then its (only) manifest under ``tag``."""
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    for blob in (layout / "blobs" / "sha256").iterdir():
        if f"sha256:{blob.name}" != entry["digest"]:
            client.push_blob(name, blob.read_bytes())
    status, _, body = client.request(
        "PUT", f"/v2/{name}/manifests/{tag}", manifest, {"Content-Type": entry["mediaType"]}
    )
    assert status == 201, body
    return str(entry["digest"])


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_ctr_pulls_from_lamina_registry(
    tmp_path: Path, busybox_rootfs: Path, containerd: str, compression: str
) -> None:
    root = str(tmp_path / "lamina-root")
    layout = tmp_path / "layout"
    for args in (
        ["import", "-t", "bb:1", "--compression", compression, str(busybox_rootfs)],
        ["save", "--format", "oci-dir", "-o", str(layout), "bb:1"],
    ):
        subprocess.run([*LAMINA, "--root", root, *args], check=True, capture_output=True)
    with Server(make_app(FilesystemStorage(tmp_path / "registry"))) as server:
        digest = push_layout(Client(server.port), layout, "lamina/busybox", "1")
        ref = f"127.0.0.1:{server.port}/lamina/busybox:1"
        ctr = ["ctr", "-a", containerd, "-n", "lamina-test"]
        pull = subprocess.run(
            [*ctr, "images", "pull", "--plain-http", ref],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert pull.returncode == 0, pull.stderr + pull.stdout
    listed = subprocess.run(
        [*ctr, "images", "ls"], capture_output=True, text=True, check=True
    ).stdout
    assert ref in listed and digest in listed
    # the pull unpacked the layer into a committed snapshot
    snapshots = subprocess.run(
        [*ctr, "snapshots", "ls"], capture_output=True, text=True, check=True
    ).stdout
    assert "Committed" in snapshots
    # and every blob containerd holds verifies against its digest
    check = subprocess.run(
        [*ctr, "images", "check"], capture_output=True, text=True, check=True
    ).stdout
    assert "complete" in check
