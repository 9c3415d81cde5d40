"""The oci model reads what umoci and skopeo write, and agrees with them."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lamina.oci import mediatypes as mt
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.docker import to_docker, to_oci
from lamina.oci.ids import chain_ids
from lamina.oci.layout import blob_relpath, check_layout_file
from lamina.oci.manifest import Index, Manifest, parse_document, referenced_descriptors
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.oci.selection import select_manifest

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("umoci") is None or shutil.which("skopeo") is None,
        reason="needs umoci and skopeo",
    ),
]


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def blob(layout: Path, d: Descriptor) -> bytes:
    data = (layout / blob_relpath(d.digest)).read_bytes()
    d.digest.verify(data)
    return data


@pytest.fixture(scope="module")
def umoci_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("umoci")
    layout = root / "lay"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:t")
    run(
        "umoci", "config", "--image", f"{layout}:t",
        "--config.cmd=sh", "--config.env=A=1", "--config.exposedports=80/tcp",
        "--config.label=x=y", "--config.workingdir=/w", "--architecture=arm64",
    )  # fmt: skip
    (root / "f").write_text("hello\n")
    run("umoci", "insert", "--image", f"{layout}:t", str(root / "f"), "/f")
    return layout


def test_read_umoci_layout(umoci_image: Path) -> None:
    assert check_layout_file((umoci_image / "oci-layout").read_bytes()).startswith("1.")
    index = Index.parse((umoci_image / "index.json").read_bytes())  # no mediaType: OCI
    assert index.media_type == mt.OCI_INDEX
    (entry,) = index.manifests
    assert entry.annotations["org.opencontainers.image.ref.name"] == "t"
    manifest = Manifest.parse(blob(umoci_image, entry), entry.media_type)
    assert [layer.media_type for layer in manifest.layers] == [mt.OCI_LAYER_GZIP]
    assert referenced_descriptors(entry.media_type, blob(umoci_image, entry)) == [
        manifest.config,
        *manifest.layers,
    ]
    config = ImageConfig.parse(blob(umoci_image, manifest.config))
    assert config.platform == Platform("linux", "arm64")
    assert config.config.cmd == ("sh",)
    assert config.config.env_dict()["A"] == "1"
    assert config.config.exposed_ports == ("80/tcp",)
    assert dict(config.config.labels) == {"x": "y"}
    assert config.config.working_dir == "/w"
    assert config.history_consistent
    assert [h.created_by for h in config.history] == ["umoci config", "umoci insert"]
    # the diff_id umoci recorded is the sha256 of the uncompressed layer
    raw = gzip.decompress(blob(umoci_image, manifest.layers[0]))
    assert config.diff_ids[0].hex == hashlib.sha256(raw).hexdigest()
    assert chain_ids(config.diff_ids) == [config.diff_ids[0]]
    # umoci's own view of the history agrees on the diff_id
    stat = json.loads(run("umoci", "stat", "--image", f"{umoci_image}:t", "--json"))
    assert stat["history"][1]["diff_id"] == str(config.diff_ids[0])
    # re-serialising loses nothing we model
    assert ImageConfig.parse(config.to_bytes()) == config
    assert Manifest.parse(manifest.to_bytes()) == manifest


def test_skopeo_docker_conversion_matches_ours(umoci_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "v2"
    run("skopeo", "copy", f"oci:{umoci_image}:t", f"dir:{out}", "--format", "v2s2")
    data = (out / "manifest.json").read_bytes()
    docker = parse_document(data, None)
    assert isinstance(docker, Manifest) and docker.is_docker
    index = Index.parse((umoci_image / "index.json").read_bytes())
    oci = Manifest.parse(blob(umoci_image, index.manifests[0]))
    mine = to_docker(oci)
    assert [(x.media_type, x.digest, x.size) for x in mine.layers] == [
        (x.media_type, x.digest, x.size) for x in docker.layers
    ]
    assert mine.config.media_type == docker.config.media_type == mt.DOCKER_CONFIG
    assert [x.media_type for x in to_oci(docker).layers] == [mt.OCI_LAYER_GZIP]
    # skopeo's Docker config is a config we read, with the same layers
    config = ImageConfig.parse((out / docker.config.digest.hex).read_bytes())
    assert config.diff_ids == ImageConfig.parse(blob(umoci_image, oci.config)).diff_ids


def test_skopeo_reads_what_we_write(umoci_image: Path, tmp_path: Path) -> None:
    # Rewrite the image with lamina's canonical bytes, as a one-entry index with a
    # platform and a full reference; skopeo must accept all of it.
    layout = tmp_path / "copy"
    shutil.copytree(umoci_image, layout)
    index = Index.parse((layout / "index.json").read_bytes())
    old = Manifest.parse(blob(layout, index.manifests[0]))
    base = ImageConfig.parse(blob(layout, old.config))
    config = base.with_config(base.config.with_env("B", "2"))
    config_bytes = config.to_bytes()
    config_desc = Descriptor(mt.OCI_CONFIG, Digest.from_bytes(config_bytes), len(config_bytes))
    (layout / blob_relpath(config_desc.digest)).write_bytes(config_bytes)
    manifest = Manifest(config_desc, old.layers)
    (layout / blob_relpath(manifest.to_descriptor().digest)).write_bytes(manifest.to_bytes())
    ref = Reference.parse("localhost:5000/demo:1")
    entry = manifest.to_descriptor(
        platform=config.platform,
        annotations={"org.opencontainers.image.ref.name": ref.tag or ""},
    )
    (layout / "index.json").write_bytes(Index((entry,)).to_bytes())
    assert select_manifest(Index((entry,)), Platform("linux", "arm64")) == entry
    info = json.loads(run("skopeo", "inspect", f"oci:{layout}:1"))
    assert info["Architecture"] == "arm64"
    assert "B=2" in info["Env"]
    assert info["Digest"] == str(entry.digest)
