"""Interop: what lamina pushes, skopeo reads; what skopeo pushes, lamina pulls; and a
multi-platform index, pushed whole and pulled per platform. Against docker-registry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_client_support import DockerRegistry, api_push, api_unpack, start_docker_registry
from registry_client_support import lamina_cli as run

from helpers.images import make_random_image, tree_contents
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.platform import Platform
from lamina.store.local import LocalStore

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    reg = start_docker_registry(tmp_path_factory.mktemp("interop-registry"))
    yield reg
    reg.stop()


def skopeo(*args: str) -> str:
    proc = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skopeo_reads_what_lamina_pushed(tmp_path: Path, registry: DockerRegistry) -> None:
    src = tmp_path / "src"
    image = make_random_image(LocalStore(src), "docker.io/library/i:1", seed=31, layers=3)
    dest = f"{registry.host}/interop/from-lamina:1"
    pushed = json.loads(run(src, "push", "i:1", dest, "--json").stdout)
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}"))
    assert info["Digest"] == pushed["digest"]
    assert info["Layers"] == [str(w.descriptor.digest) for w in image.layers]
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:x")
    # skopeo keeps the manifest as is: its digest is the one lamina pushed
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pushed["digest"]


def test_lamina_pulls_what_skopeo_pushed(tmp_path: Path, registry: DockerRegistry) -> None:
    src = tmp_path / "src"
    image = make_random_image(LocalStore(src), "docker.io/library/s:1", seed=32, layers=2)
    layout = tmp_path / "layout"
    run(src, "save", "s:1", "--format", "oci-dir", "-o", str(layout))
    dest = f"{registry.host}/interop/from-skopeo:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}", f"docker://{dest}")
    fresh = tmp_path / "fresh"
    out = run(fresh, "pull", dest)
    assert out.stdout.startswith(f"Pulled {dest} (sha256:")
    api_unpack(fresh, dest, tmp_path / "tree")
    assert tree_contents(str(tmp_path / "tree")) == image.expected


def _other_platform() -> Platform:
    return (
        Platform("linux", "arm64", "v8")
        if Platform.host().architecture != "arm64"
        else (Platform("linux", "amd64"))
    )


def _make_index(store: LocalStore) -> tuple[Descriptor, Descriptor, Descriptor]:
    """An index of two images (this host's platform and another); (index, host, other)."""
    host = make_random_image(store, "docker.io/library/p-host:1", seed=41, layers=2)
    other = make_random_image(store, "docker.io/library/p-other:1", seed=42, layers=2)
    other_manifest = Manifest.parse(store.read_blob(other.descriptor.digest))
    config = json.loads(store.read_blob(other_manifest.config.digest))
    plat = _other_platform()
    config["architecture"], config["os"] = plat.architecture, plat.os
    config["variant"] = plat.variant
    cfg = json.dumps(config).encode()
    cfg_desc = Descriptor(mt.OCI_CONFIG, Digest.from_bytes(cfg), len(cfg))
    store.put_bytes(cfg, cfg_desc.digest)
    manifest = Manifest(cfg_desc, other_manifest.layers)
    store.put_bytes(manifest.to_bytes())
    host_desc = Descriptor(
        mt.OCI_MANIFEST, host.descriptor.digest, host.descriptor.size, platform=Platform.host()
    )
    other_desc = manifest.to_descriptor(platform=plat)
    index = Index((other_desc, host_desc))
    data = index.to_bytes()
    store.put_bytes(data)
    index_desc = index.to_descriptor()
    store.set_ref("docker.io/library/multi:1", index_desc)
    store.delete_ref("docker.io/library/p-other:1")
    return index_desc, host_desc, other_desc


def test_multi_platform_index_push_and_platform_pull(
    tmp_path: Path, registry: DockerRegistry
) -> None:
    src = tmp_path / "src"
    index, host, other = _make_index(LocalStore(src))
    dest = f"{registry.host}/interop/multi:1"
    pushed = json.loads(run(src, "push", "multi:1", dest, "--json").stdout)
    assert pushed["digest"] == str(index.digest)
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}"))
    assert {m["digest"] for m in raw["manifests"]} == {str(host.digest), str(other.digest)}

    fresh = tmp_path / "fresh"
    out = json.loads(run(fresh, "pull", dest, "--json").stdout)
    assert (out["digest"], out["manifest"]) == (str(index.digest), str(host.digest))
    assert LocalStore(fresh).get_ref(out["name"]).digest == index.digest
    inspect = run(fresh, "inspect", "--raw", "config", dest).stdout
    assert json.loads(inspect)["architecture"] == Platform.host().architecture
    # the fresh store has one platform of the index: pushing it sends that manifest
    again = api_push(fresh, dest, f"{registry.host}/interop/host-only:1")
    assert again.descriptor.digest == host.digest

    plat = _other_platform()
    fresh2 = tmp_path / "fresh2"
    out = json.loads(run(fresh2, "pull", "--platform", str(plat), dest, "--json").stdout)
    assert (out["digest"], out["manifest"]) == (str(index.digest), str(other.digest))
    store2 = LocalStore(fresh2)
    # the name points at the chosen manifest, so the image resolves on this host
    assert store2.get_ref(out["name"]).digest == other.digest
    inspect = run(fresh2, "inspect", "--raw", "config", dest).stdout
    assert json.loads(inspect)["architecture"] == plat.architecture
    host_manifest = Manifest.parse(LocalStore(src).read_blob(host.digest))
    assert not store2.has(host_manifest.config.digest)
