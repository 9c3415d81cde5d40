"""A container's upper dir committed as a layer: the new image unpacks to the merged view."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.images import import_busybox
from helpers.tree import assert_trees_equal, overlay_mount
from lamina.image.archives.oci_layout import export_oci_layout
from lamina.image.commit import commit_upper
from lamina.image.images import resolve
from lamina.image.unpack import unpack_image
from lamina.oci.reference import Reference
from lamina.store.local import LocalStore

pytestmark = pytest.mark.root


def test_commit_upper_dir(store: LocalStore, busybox_rootfs: Path, tmp_path: Path) -> None:
    import_busybox(store, str(busybox_rootfs))
    base = resolve(store, "busybox")
    lower = tmp_path / "lower"
    unpack_image(store, base, str(lower))
    (lower / "in_lower.txt").write_bytes(b"lower")
    (lower / "in_both.txt").write_bytes(b"old")
    upper, work, merged = tmp_path / "up", tmp_path / "work", tmp_path / "m"
    with overlay_mount([lower], upper, work, merged) as m:
        (m / "in_upper.txt").write_bytes(b"new")
        (m / "in_lower.txt").unlink()
        (m / "in_both.txt").write_bytes(b"modified")
        shutil.rmtree(m / "home")
        snapshot = tmp_path / "expected"
        subprocess.run(["cp", "-a", f"{m}/.", str(snapshot)], check=True)
    result = commit_upper(
        store,
        base,
        str(upper),
        "docker.io/library/committed:1",
        created_by="sh -c edit",
        comment="seed walk-through",
        changes=["ENV STEP=1"],
    )
    image = resolve(store, "committed:1")
    assert image.id == result.image_id
    assert len(image.manifest.layers) == len(base.manifest.layers) + 1
    assert image.config.config.env_dict()["STEP"] == "1"
    assert image.config.config.cmd == ("sh",)
    assert image.config.history[-1].comment == "seed walk-through"
    assert image.config.history_consistent
    # the new layer alone: upper-dir content and whiteouts, nothing else
    blob = store.blob_path(result.layer.digest)
    names = subprocess.run(
        ["tar", "-tzf", blob], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(names) == [".wh.home", ".wh.in_lower.txt", "in_both.txt", "in_upper.txt"]
    # base + new layer = what the container saw (in_lower.txt exists only in `lower`,
    # which is not part of the base image, so drop it from the expectation)
    out = tmp_path / "out"
    unpack_image(store, image, str(out))
    assert_trees_equal(snapshot, out)
    # umoci reads the committed image, whiteouts included
    layout = tmp_path / "layout"
    export_oci_layout(
        store, [(Reference.parse("committed:1"), image.descriptor)], str(layout), as_tar=False
    )
    stat = subprocess.run(
        ["umoci", "stat", "--json", "--image", f"{layout}:1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(stat.stdout)["history"]) == len(image.config.history)
