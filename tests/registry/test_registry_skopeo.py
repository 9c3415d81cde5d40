"""skopeo against lamina's registry: copy OCI layouts made by lamina in and back out
(gzip and zstd layers, a multi-arch index), inspect, list-tags, delete."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import LAMINA
from helpers.registry_server import Server
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed"),
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def skopeo(*args: str) -> str:
    return run("skopeo", "--insecure-policy", *args)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> dict[str, Path]:
    """OCI layouts made with lamina: busybox with gzip layers, with zstd layers, and a
    two-platform index (amd64 + arm64) in one layout."""
    work = tmp_path_factory.mktemp("layouts")
    root = str(work / "root")
    lamina = [*LAMINA, "--root", root]
    out: dict[str, Path] = {}
    for name, extra in (("gzip", []), ("zstd", ["--compression", "zstd"])):
        run(*lamina, "import", "-t", f"bb-{name}:1", *extra, str(busybox_rootfs))
        run(*lamina, "save", "--format", "oci-dir", "-o", str(work / name), f"bb-{name}:1")
        out[name] = work / name
    for arch in ("amd64", "arm64"):
        run(*lamina, "import", "-t", f"multi-{arch}:1", "--platform", f"linux/{arch}",
            str(busybox_rootfs))  # fmt: skip
    multi = work / "multi"
    run(*lamina, "save", "--format", "oci-dir", "-o", str(multi), "multi-amd64:1", "multi-arm64:1")
    entries = json.loads((multi / "index.json").read_text())["manifests"]
    manifests = []
    for entry, arch in zip(entries, ("amd64", "arm64"), strict=True):
        manifests.append(
            {
                "mediaType": entry["mediaType"],
                "digest": entry["digest"],
                "size": entry["size"],
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    ).encode()
    digest = hashlib.sha256(index).hexdigest()
    (multi / "blobs" / "sha256" / digest).write_bytes(index)
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": f"sha256:{digest}",
                "size": len(index),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (multi / "index.json").write_text(json.dumps(top))
    out["multi"] = multi
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("registry")
    with Server(make_app(FilesystemStorage(root))) as server:
        yield f"127.0.0.1:{server.port}", root


def manifest_digest(layout: Path) -> str:
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    return str(entries[0]["digest"])


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_copy_in_inspect_list_tags_and_copy_out(
    layouts: dict[str, Path], registry: tuple[str, Path], tmp_path: Path, compression: str
) -> None:
    host, _ = registry
    layout = layouts[compression]
    ref = f"docker://{host}/lamina/busybox-{compression}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"{ref}:1")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"{ref}:latest")
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"{ref}:1"))
    assert info["Digest"] == manifest_digest(layout)
    assert sorted(info["RepoTags"]) == ["1", "latest"]
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"{ref}:1"))
    suffix = "+zstd" if compression == "zstd" else "+gzip"
    assert all(layer["mediaType"].endswith(suffix) for layer in raw["layers"])
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", ref))
    assert sorted(tags["Tags"]) == ["1", "latest"]
    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", f"{ref}:1", f"oci:{out}:copy")
    assert manifest_digest(out) == manifest_digest(layout)
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert (out / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()


def test_copy_multi_arch_index(
    layouts: dict[str, Path], registry: tuple[str, Path], tmp_path: Path
) -> None:
    host, _ = registry
    layout = layouts["multi"]
    ref = f"docker://{host}/lamina/multi:1"
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:1", ref)
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", ref))
    assert raw["mediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    arm = json.loads(skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64", ref))
    assert arm["Architecture"] == "arm64"
    out = tmp_path / "out"
    skopeo("copy", "--all", "--src-tls-verify=false", ref, f"oci:{out}:1")
    assert manifest_digest(out) == manifest_digest(layout)


def test_skopeo_delete(layouts: dict[str, Path], registry: tuple[str, Path]) -> None:
    host, _ = registry
    ref = f"docker://{host}/lamina/doomed"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layouts['gzip']}:1", f"{ref}:1")
    digest = manifest_digest(layouts["gzip"])
    skopeo("delete", "--tls-verify=false", f"{ref}@{digest}")
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"{ref}:1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "manifest unknown" in proc.stderr.lower()
