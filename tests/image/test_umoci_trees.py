"""umoci and lamina agree on trees: what one packs, the other unpacks identically.

Acceptance of the foundation issue: an image lamina saves as `oci-dir` is unpacked by
`umoci unpack` into the tree `lamina unpack` gives; an image umoci makes (with
`umoci repack` whiteouts over several layers) loads into lamina and unpacks to the tree
umoci gives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.cli import Lamina
from helpers.tree import Dir, Fifo, File, Hardlink, Symlink, assert_trees_equal, build_tree

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="umoci unpack keeps owners only as root"),
]

SPEC = {
    "bin/app": File(b"\x7fELF" + bytes(range(256)) * 64, mode=0o755),
    "bin/app-hardlink": Hardlink("bin/app"),
    "bin/suid": File(b"suid", mode=0o4755),
    "bin/sgid": File(b"sgid", mode=0o2711, gid=50),
    "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
    "etc/alternatives/editor": Symlink("/usr/bin/vi"),
    "etc/rel": Symlink("../usr/share/doc"),
    "home/user/": Dir(mode=0o750, uid=1000, gid=1000),
    "home/user/.profile": File(b"export A=1\n", mode=0o600, uid=1000, gid=1000),
    "tmp/": Dir(mode=0o1777),
    "usr/share/doc/README": File(b"read me\n" * 1000),
    "usr/share/empty/": Dir(),
    "var/run/fifo": Fifo(),
    "long/" + "d" * 120 + "/" + "f" * 150: File(b"long name"),
    "unicodé/ファイル": File(b"utf-8 names"),
}


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


def test_lamina_image_unpacked_by_umoci(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    build_tree(rootfs, SPEC)
    lamina("import", str(rootfs), "-t", "interop/app:v1")
    layout = tmp_path / "layout"
    lamina("save", "interop/app:v1", "-o", str(layout), "--format", "oci-dir")
    # skopeo reads it by tag
    inspect = json.loads(_run("skopeo", "inspect", f"oci:{layout}:v1"))
    assert len(inspect["Layers"]) == 1
    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--image", f"{layout}:v1", str(bundle))
    ours = tmp_path / "ours"
    lamina("unpack", "interop/app:v1", str(ours))
    assert_trees_equal(bundle / "rootfs", ours)
    assert_trees_equal(rootfs, ours)


def test_umoci_repack_whiteouts_load_into_lamina(lamina: Lamina, tmp_path: Path) -> None:
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:base")
    _run("umoci", "unpack", "--image", f"{layout}:base", str(bundle))
    root = bundle / "rootfs"
    build_tree(root, SPEC)
    build_tree(
        root,
        {
            "data/gone/sub/file": File(b"1"),
            "data/keep": File(b"v1"),
            "data/removed.txt": File(b"bye"),
        },
    )
    # --refresh-bundle makes the next repack a diff against this layer
    _run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v1", str(bundle))
    shutil.rmtree(root / "data/gone")
    (root / "data/removed.txt").unlink()
    (root / "data/keep").write_bytes(b"v2 changed")
    (root / "bin/app-hardlink").unlink()
    (root / "etc/rel").unlink()
    (root / "etc/rel").mkdir()  # a symlink replaced by a directory
    (root / "etc/rel/inside").write_bytes(b"x")
    _run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v2", str(bundle))
    _run("umoci", "config", "--image", f"{layout}:v2", "--config.cmd", "sh")
    # the top layer really carries whiteouts
    index = json.loads((layout / "index.json").read_text())
    v2 = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == "v2"
    )
    manifest = json.loads((layout / "blobs/sha256" / v2["digest"][7:]).read_text())
    assert len(manifest["layers"]) == 2
    top = layout / "blobs/sha256" / manifest["layers"][1]["digest"][7:]
    names = _run("tar", "-tzf", str(top)).split()
    assert "data/.wh.gone" in names and "data/.wh.removed.txt" in names

    reference = tmp_path / "umoci-v2"
    _run("umoci", "unpack", "--image", f"{layout}:v2", str(reference))

    out = lamina("load", "-i", str(layout), "--name", "umoci/test")
    assert "Loaded image: umoci/test:v2" in out.stdout.splitlines()
    ours = tmp_path / "ours"
    lamina("unpack", "umoci/test:v2", str(ours))
    assert_trees_equal(reference / "rootfs", ours)
    assert not (ours / "data/gone").exists() and (ours / "data/keep").read_bytes() == b"v2 changed"
    history = json.loads(lamina("history", "umoci/test:v2", "--json").stdout)
    assert any(h["empty_layer"] for h in history)
