"""Caps on manifests and configs (lamina.oci.canonical MANIFEST_MAX / CONFIG_MAX, 4 MiB)
at every way an image enters the store, and a listing that one bad record cannot break.

A config over the cap used to be taken by pull, load and import; afterwards every
``lamina images`` failed. Each entry now refuses it with a LimitExceeded and a hint,
and ``lamina images`` lists the other images and names the bad one on stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import LAMINA
from helpers.images import make_random_image
from lamina.errors import LimitExceeded
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.manifest import Manifest
from lamina.store.local import LocalStore

CAP = 4 << 20
BIG = CAP + 1024


def _config_bytes(extra: int, diff_ids: list[str] | None = None) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"big": "x" * extra}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or []},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _put_big_image(store: LocalStore, name: str) -> Descriptor:
    """An image whose config is over the cap, written into the store by hand (what an
    older lamina let in)."""
    config = _config_bytes(BIG)
    info = store.put_bytes(config)
    manifest = Manifest(config=Descriptor(mt.OCI_CONFIG, info.digest, info.size), layers=())
    data = manifest.to_bytes()
    minfo = store.put_bytes(data)
    desc = Descriptor(mt.OCI_MANIFEST, minfo.digest, minfo.size)
    store.set_ref(name, desc)
    return desc


def _images(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAMINA, "--root", str(root), "images", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_images_lists_the_rest_and_warns_about_one_bad_record(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalStore(root)
    make_random_image(store, "docker.io/library/good:1", seed=1, layers=1)
    _put_big_image(store, "docker.io/library/huge:1")
    out = _images(root)
    assert out.returncode == 0, out.stderr
    assert "good" in out.stdout and "huge" not in out.stdout
    assert "warning" in out.stderr and "docker.io/library/huge:1" in out.stderr
    assert "Traceback" not in out.stderr
    out = _images(root, "--json")
    assert out.returncode == 0, out.stderr
    assert [row["repository"] for row in json.loads(out.stdout)] == ["good"]
    assert "docker.io/library/huge:1" in out.stderr


def test_import_refuses_a_config_over_the_cap(tmp_path: Path) -> None:
    from lamina.image.importer import import_rootfs

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    store = LocalStore(tmp_path / "root")
    with pytest.raises(LimitExceeded) as caught:
        import_rootfs(store, str(tree), "docker.io/library/imp:1", changes=[f"LABEL a={'y' * BIG}"])
    assert "config" in caught.value.message and str(CAP) in caught.value.message
    assert caught.value.hint
    assert store.list_refs() == {}


def _layout(tmp_path: Path) -> Path:
    """An OCI layout dir holding one image with a config over the cap."""
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd

    config = _config_bytes(BIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": put(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def _load(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAMINA, "--root", str(root), "load", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_load_of_an_oci_layout_refuses_a_config_over_the_cap(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    root = tmp_path / "root"
    out = _load(root, "-i", str(layout))
    assert out.returncode != 0
    assert "config" in out.stderr and str(CAP) in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr
    assert LocalStore(root).list_refs() == {}


def test_load_of_a_docker_archive_refuses_a_config_over_the_cap(tmp_path: Path) -> None:
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("f")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    layer = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = _config_bytes(BIG, [diff_id])
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    archive = tmp_path / "image.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["huge:1"], "Layers": ["layer.tar"]}]
    ).encode()
    with tarfile.open(archive, "w") as t:
        for name, data in (
            (config_name, config),
            ("layer.tar", layer),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    root = tmp_path / "root"
    out = _load(root, "-i", str(archive))
    assert out.returncode != 0
    assert "config" in out.stderr and str(CAP) in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr
    assert LocalStore(root).list_refs() == {}


@pytest.fixture
def lamina_registry(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - the server keeps a copy
    proc = subprocess.Popen(
        [*LAMINA, "registry", "serve", "--addr", host, "--storage", str(tmp_path / "storage")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError((tmp_path / "registry.log").read_text()[-2000:]) from None
            time.sleep(0.05)
    try:
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pull_refuses_a_config_over_the_cap(tmp_path: Path, lamina_registry: str) -> None:
    from lamina.image import images as img
    from lamina.image.api import NoProgress
    from lamina.image.transfer.pull import pull_image
    from lamina.image.transfer.push import plan_push, push_image
    from lamina.oci.reference import Reference
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport

    source = LocalStore(tmp_path / "src")
    desc = _put_big_image(source, "docker.io/library/huge:1")
    ref = Reference.parse(f"{lamina_registry}/team/huge:1")
    plan = plan_push(source, desc, desc)
    dest = LocalStore(tmp_path / "dest")

    async def go() -> None:
        async with RegistryClient(Transport(lambda r: None)) as client:
            await push_image(client, source, plan, ref, progress=NoProgress())
        async with RegistryClient(Transport(lambda r: None)) as client:
            await pull_image(client, dest, ref, progress=NoProgress())

    with pytest.raises(LimitExceeded) as caught:
        asyncio.run(go())
    assert "config" in caught.value.message and caught.value.hint
    assert dest.list_refs() == {}
    assert img.list_images(dest) == []


def test_build_refuses_a_config_over_the_cap(tmp_path: Path) -> None:
    # each word under the builder's 1 MiB expansion cap, the Containerfile under its
    # 4 MiB: only the config they make together is over the cap
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(
        "FROM scratch\nENV a=" + "x" * (900 << 10) + "\nENV b=$a c=$a d=$a e=$a\nLABEL f=$a\n"
    )
    root = tmp_path / "root"
    out = subprocess.run(
        [*LAMINA, "--root", str(root), "build", "-t", "huge:1", str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode != 0
    assert "config" in out.stderr and str(CAP) in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr
    assert "docker.io/library/huge:1" not in LocalStore(root).list_refs()
