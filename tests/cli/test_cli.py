"""The `lamina` command end to end, as a user runs it (real subprocesses, real store)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from helpers.tree import Dir, File, Hardlink, Symlink, assert_trees_equal, build_tree

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def _rootfs(path: Path) -> Path:
    build_tree(
        path,
        {
            "bin/tool": File(b"#!/bin/sh\necho hi\n", mode=0o755),
            "bin/tool-link": Hardlink("bin/tool"),
            "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\n"),
            "etc/motd": Symlink("../usr/share/motd"),
            "usr/share/motd": File(b"welcome\n"),
            "var/empty/": Dir(mode=0o700),
            "usr/bin/suid": File(b"x", mode=0o4755),
        },
    )
    return path


def test_import_images_history_inspect(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    out = lamina(
        "import",
        str(rootfs),
        "-t",
        "demo/app:1",
        "--change",
        'CMD ["sh"]',
        "--change",
        "ENV A=b",
        "--json",
        env=EPOCH,
    )
    result = json.loads(out.stdout)
    assert result["name"] == "docker.io/demo/app:1"
    images = json.loads(lamina("images", "--json").stdout)
    assert [(i["repository"], i["tag"]) for i in images] == [("demo/app", "1")]
    assert images[0]["id"] == result["id"]
    assert images[0]["created"].startswith("2023-11-14T22:13:20")
    table = lamina("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == ["demo/app", "1", result["id"][7:19]]
    history = json.loads(lamina("history", "demo/app:1", "--json").stdout)
    assert len(history) == 1 and history[0]["comment"] == "Imported from rootfs"
    assert history[0]["diff_id"] == result["layer"]["diff_id"]
    inspect = json.loads(lamina("inspect", "demo/app:1").stdout)[0]
    assert inspect["Config"]["config"]["Cmd"] == ["sh"]
    assert inspect["Config"]["config"]["Env"] == ["A=b"]
    assert inspect["Config"]["rootfs"]["diff_ids"] == [result["layer"]["diff_id"]]
    # the image ID prefix resolves too
    short = json.loads(lamina("inspect", result["id"][7:19]).stdout)[0]
    assert short["Id"] == result["id"]


def test_import_is_reproducible(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    first = json.loads(lamina("import", str(rootfs), "-t", "a", "--json", env=EPOCH).stdout)
    # a second store, a later mtime on the tree: the same bytes come out
    os.utime(rootfs / "etc/passwd", (1_800_000_000, 1_800_000_000))
    root2 = tmp_path / "root2"
    proc = subprocess.run(
        [*lamina_cmd(), "--root", str(root2), "import", str(rootfs), "-t", "a", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **EPOCH},
        check=True,
    )
    second = json.loads(proc.stdout)
    assert first["digest"] == second["digest"]
    assert first["layer"] == second["layer"]
    # without SOURCE_DATE_EPOCH the config's created time differs, so the digest does
    third = json.loads(lamina("import", str(rootfs), "-t", "b", "--json").stdout)
    assert third["digest"] != first["digest"]


def lamina_cmd() -> list[str]:
    return list(LAMINA)


def test_import_tarball_and_zstd(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    tarball = tmp_path / "rootfs.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(rootfs), "."], check=True)
    lamina("import", str(tarball), "-t", "fromtar", "--compression", "zstd")
    inspect = json.loads(lamina("inspect", "fromtar").stdout)[0]
    assert inspect["Manifest"]["layers"][0]["mediaType"].endswith("tar+zstd")
    lamina("unpack", "fromtar", str(tmp_path / "out"))
    assert_trees_equal(rootfs, tmp_path / "out")


@pytest.mark.root
def test_unpack_gives_the_imported_tree(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    os.chown(rootfs / "etc/passwd", 12, 34)
    lamina("import", str(rootfs), "-t", "x")
    out = lamina("unpack", "x", str(tmp_path / "out"), "--json")
    assert json.loads(out.stdout)["layers"] == 1
    assert_trees_equal(rootfs, tmp_path / "out", mtimes=True)
    assert (tmp_path / "out/usr/bin/suid").stat().st_mode & 0o7777 == 0o4755


def test_tag_rmi_prune(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    lamina("import", str(rootfs), "-t", "one")
    lamina("tag", "one", "registry.example:5000/team/two:v2")
    names = {i["name"] for i in json.loads(lamina("images", "--json").stdout)}
    assert names == {"docker.io/library/one:latest", "registry.example:5000/team/two:v2"}
    image_id = json.loads(lamina("images", "--json").stdout)[0]["id"]
    # an ID with two names needs -f
    refused = lamina("rmi", image_id[7:19], check=False)
    assert refused.returncode != 0 and "several names" in refused.stderr
    assert "Untagged: one:latest" in lamina("rmi", "one").stdout
    # nothing is pruned while a name still holds the image
    kept = json.loads(lamina("prune", "--json").stdout)
    assert kept["removed_blobs"] == 0
    lamina("rmi", "registry.example:5000/team/two:v2")
    assert json.loads(lamina("images", "--json").stdout) == []
    dry = json.loads(lamina("prune", "--dry-run", "--json").stdout)
    assert dry["removed_blobs"] == 3  # layer, config, manifest
    pruned = json.loads(lamina("prune", "--json").stdout)
    assert pruned["removed_blobs"] == 3 and pruned["removed_bytes"] > 0
    assert json.loads(lamina("prune", "--json").stdout)["removed_blobs"] == 0


def test_save_load_round_trip_all_formats(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    lamina("import", str(rootfs), "-t", "app:1", env=EPOCH)
    digest = json.loads(lamina("images", "--json").stdout)[0]["digest"]
    for fmt in ("oci", "oci-dir", "docker", "docker-legacy"):
        path = tmp_path / f"out-{fmt}"
        lamina("save", "app:1", "-o", str(path), "--format", fmt)
        root2 = tmp_path / f"root-{fmt}"
        proc = subprocess.run(
            [*lamina_cmd(), "--root", str(root2), "load", "-i", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "Loaded image: app:1", fmt
        listed = json.loads(
            subprocess.run(
                [*lamina_cmd(), "--root", str(root2), "images", "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert listed[0]["name"] == "docker.io/library/app:1"
        if fmt != "docker-legacy":  # the legacy format rebuilds the manifest
            assert listed[0]["digest"] == digest, fmt


def test_load_from_stdin(lamina: Lamina, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path / "rootfs")
    lamina("import", str(rootfs), "-t", "app:1")
    lamina("save", "app:1", "-o", str(tmp_path / "a.tar"))
    root2 = tmp_path / "root2"
    with open(tmp_path / "a.tar", "rb") as f:
        proc = subprocess.run(
            [*lamina_cmd(), "--root", str(root2), "load", "-i", "-"],
            stdin=f,
            capture_output=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == "Loaded image: app:1"


def test_errors_are_one_line_with_exit_codes(lamina: Lamina, tmp_path: Path) -> None:
    missing = lamina("inspect", "nothing-here", check=False)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: image 'nothing-here' not found")
    assert "hint:" in missing.stderr and "Traceback" not in missing.stderr
    bad = lamina("tag", "x", "UPPER/case", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    nofile = lamina("import", str(tmp_path / "nope"), "-t", "x", check=False)
    assert nofile.returncode == 2 and "no such file" in nofile.stderr
    badchange = lamina("import", str(tmp_path), "-t", "x", "--change", "FROB x", check=False)
    assert badchange.returncode == 4 and "FROB" in badchange.stderr
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x00" * 100 + b"not a tar" * 100)
    loaded = lamina("load", "-i", str(garbage), check=False)
    assert loaded.returncode != 0 and "Traceback" not in loaded.stderr
    assert json.loads(lamina("images", "--json").stdout) == []


def test_bootstrap_busybox_runs(lamina: Lamina, tmp_path: Path) -> None:
    lamina("bootstrap", "busybox", "-t", "bb", env=EPOCH)
    lamina("unpack", "bb", str(tmp_path / "bb"))
    out = subprocess.run(
        [str(tmp_path / "bb/bin/sh"), "-c", "echo ok"], capture_output=True, text=True, check=True
    )
    assert out.stdout == "ok\n"
    inspect = json.loads(lamina("inspect", "bb").stdout)[0]
    assert inspect["Config"]["config"]["Cmd"] == ["sh"]
