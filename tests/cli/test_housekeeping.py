"""Housekeeping that loses nothing: `lamina rmi`, `prune`, `builder prune` with real
containers (runc, overlayfs), real builds and real leases held by other processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LAMINA, Lamina

pytestmark = [pytest.mark.root, pytest.mark.interop]

IN_USE_EXIT = 10  # lamina.errors.InUse


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    """The lamina fixture with a busybox image called `bb`."""
    lamina("bootstrap", "busybox", "-t", "bb")
    return lamina


def _root(lamina: Lamina) -> Path:
    return Path(lamina.root)  # type: ignore[attr-defined]


def _blobs(lamina: Lamina) -> set[str]:
    base = _root(lamina) / "blobs"
    return {f"{p.parent.name}:{p.name}" for p in base.glob("*/*") if p.is_file()}


def _snapshots(lamina: Lamina) -> set[str]:
    from lamina.snapshot.overlay import OverlaySnapshotter

    return {info.name for info in OverlaySnapshotter(str(_root(lamina))).walk()}


def _image_blobs(lamina: Lamina, ref: str) -> set[str]:
    inspect = json.loads(lamina("inspect", ref).stdout)[0]
    manifest = inspect["Manifest"]
    return {
        inspect["ManifestDigest"],
        manifest["config"]["digest"],
        *(layer["digest"] for layer in manifest["layers"]),
    }


def _prune(lamina: Lamina, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(lamina("prune", "--json", *args).stdout)
    return out


# --------------------------------------------------------------------------- rmi


def test_rmi_refuses_an_image_a_stopped_or_running_container_uses(bb: Lamina) -> None:
    bb("run", "--name", "stopped", "bb", "true")
    refused = bb("rmi", "bb", check=False)
    assert refused.returncode == IN_USE_EXIT
    assert "unable to remove repository reference 'bb' (must force)" in refused.stderr
    assert "(stopped) is using its referenced image" in refused.stderr
    assert "hint: remove the container first (`lamina rm stopped`)" in refused.stderr
    assert [i["name"] for i in json.loads(bb("images", "--json").stdout)] == [
        "docker.io/library/bb:latest"
    ]
    bb("rm", "stopped")
    bb("run", "-d", "--name", "running", "bb", "sleep", "300")
    try:
        image_id = json.loads(bb("images", "--json").stdout)[0]["id"]
        by_id = bb("rmi", image_id[7:19], check=False)
        assert by_id.returncode == IN_USE_EXIT and "(running)" in by_id.stderr
        # nothing is untagged when one REF of several is refused
        bb("tag", "bb", "other")
        both = bb("rmi", "other", "bb", check=False)
        assert both.returncode == IN_USE_EXIT
        assert len(json.loads(bb("images", "--json").stdout)) == 2
        # a name whose image keeps another name goes without -f (as Docker)
        assert "Untagged: other:latest" in bb("rmi", "other").stdout
        running = json.loads(bb("ps", "--json").stdout)[0]["id"]
        forced = json.loads(bb("rmi", "-f", "bb", "--json").stdout)
        assert forced == {
            "untagged": ["docker.io/library/bb:latest"],
            "images": [
                {
                    "ref": "bb",
                    "id": image_id,
                    "untagged": ["docker.io/library/bb:latest"],
                    "containers": [running],
                }
            ],
        }
    finally:
        bb("rm", "-f", "running")


def test_rmi_of_a_name_whose_image_is_damaged_still_untags(bb: Lamina) -> None:
    manifest = json.loads(bb("inspect", "bb").stdout)[0]["ManifestDigest"]
    bb("tag", "bb", "broken")
    bb("rmi", "bb")
    (_root(bb) / "blobs" / "sha256" / manifest.split(":")[1]).unlink()
    assert bb("rmi", "broken").stdout == "Untagged: broken:latest\n"


def test_forced_rmi_then_prune_keeps_what_the_container_needs(bb: Lamina) -> None:
    needed = _image_blobs(bb, "bb")
    image_id = json.loads(bb("images", "--json").stdout)[0]["id"]
    bb("run", "--name", "holder", "bb", "sh", "-c", "echo changed > /file")
    assert bb("rmi", "-f", "bb").stdout == "Untagged: bb:latest\n"
    assert json.loads(bb("images", "--json").stdout) == []
    snaps = _snapshots(bb)
    pruned = _prune(bb)
    assert needed <= _blobs(bb)
    assert _snapshots(bb) == snaps
    assert pruned["removed_blobs"] == 0 and pruned["removed_snapshots"] == 0
    assert pruned["containers_in_use"] == 1
    assert "A /file" in bb("diff", "holder").stdout.splitlines()
    # The container's image has no name now, but it is whole: commit and run by ID work
    # (Docker's `<none>` image), and the commit's base is that image.
    assert bb("run", "--rm", image_id, "cat", "/file", check=False).returncode == 1
    bb("commit", "holder", "kept:1")
    assert bb("run", "--rm", "kept:1", "cat", "/file").stdout == "changed\n"
    bb("rmi", "kept:1")
    bb("rm", "holder")
    pruned = _prune(bb)
    assert needed.isdisjoint(_blobs(bb))
    assert pruned["removed_snapshots"] >= 2  # the busybox layer and its init snapshot


def test_a_moved_tag_does_not_take_a_containers_image(bb: Lamina, tmp_path: Path) -> None:
    """The image loses its name without rmi (a pull, build or tag moved it): its blobs
    stay while a container uses it. gc finds its manifest from the config digest."""
    needed = _image_blobs(bb, "bb")
    bb("run", "--name", "holder", "bb", "true")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "motd").write_text("new\n")
    bb("import", str(rootfs), "-t", "bb")  # `bb` now names another image
    pruned = _prune(bb)
    assert pruned["removed_blobs"] == 0
    assert needed <= _blobs(bb)
    bb("rm", "holder")
    assert _prune(bb)["removed_blobs"] == len(needed)


# --------------------------------------------------------------------------- dry run


def _without_dry_run(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "dry_run"}


def test_dry_run_reports_exactly_what_prune_removes(bb: Lamina, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb\nCOPY a.txt /a.txt\n")
    (ctx / "a.txt").write_text("a\n")
    bb("build", "--progress", "quiet", "-t", "built", str(ctx))
    bb("run", "--rm", "built", "true")  # unpacks its layers and makes its init snapshot
    bb("rmi", "built")
    for extra in ([], ["--build-cache"]):
        blobs, snaps = _blobs(bb), _snapshots(bb)
        dry = _prune(bb, "--dry-run", *extra)
        assert dry["dry_run"] is True
        assert (_blobs(bb), _snapshots(bb)) == (blobs, snaps)  # the dry run removed nothing
        real = _prune(bb, *extra)
        assert real["dry_run"] is False
        assert _without_dry_run(real) == _without_dry_run(dry)
        # ...and the report is what left the disk
        assert blobs - _blobs(bb) == {b["digest"] for b in dry["blobs"]}
        assert sum(b["size"] for b in dry["blobs"]) == dry["removed_bytes"]
        assert snaps - _snapshots(bb) == set(dry["snapshots"])
        assert dry["reclaimed_bytes"] == dry["removed_bytes"] + dry["removed_snapshot_bytes"]
        if not extra:
            # the built image's manifest and config, its layer and init snapshots; the
            # layer blob stays for the build cache record
            assert (dry["removed_blobs"], dry["removed_snapshots"]) == (2, 2)
            assert dry["removed_snapshot_bytes"] > 0
            assert dry["kept_build_cache_records"] == 1
        else:
            assert (dry["removed_blobs"], dry["removed_build_cache_records"]) == (1, 1)
    # human output: the same numbers, in words
    assert bb("prune", "--dry-run").stdout.startswith("Would reclaim: 0B (0 blobs, 0 unpacked")
    bb("run", "--rm", "bb", "true")
    bb("rmi", "bb")
    words = bb("prune", "--dry-run").stdout.removeprefix("Would reclaim: ")
    assert " (3 blobs, 2 unpacked layers, 0 build cache records)" in words
    assert bb("prune").stdout.removeprefix("Total reclaimed space: ") == words


# --------------------------------------------------------------------------- build cache


def _build(lamina: Lamina, ctx: Path, tag: str) -> str:
    return lamina("build", "--progress", "plain", "-t", tag, str(ctx)).stderr


def test_prune_keeps_the_build_cache_unless_asked(bb: Lamina, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM bb AS stage\nRUN echo made > /made; echo junk > /junk\n"
        "FROM bb\nCOPY --from=stage /made /made\n"
    )
    _build(bb, ctx, "app")
    pruned = _prune(bb)
    assert pruned["removed_build_cache_records"] == 0
    assert pruned["kept_build_cache_records"] == 2
    assert pruned["removed_blobs"] == 0  # the stage's layer: only the cache names it
    again = _build(bb, ctx, "app")
    assert again.count(" CACHED\n") == 2, again
    # `--build-cache` drops the records of layers nothing else needs, and the layers
    dropped = _prune(bb, "--build-cache")
    assert dropped["removed_build_cache_records"] == 1
    assert dropped["kept_build_cache_records"] == 1  # the COPY layer: `app` holds it
    assert dropped["removed_blobs"] == 1
    assert _build(bb, ctx, "app").count(" CACHED\n") == 1


def test_builder_prune_takes_only_the_build_cache(bb: Lamina, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb\nRUN echo made > /made\n")
    _build(bb, ctx, "app")
    # an unnamed image that is no build cache: `builder prune` leaves it to `prune`
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    bb("import", str(rootfs), "-t", "loose")
    loose = _image_blobs(bb, "loose")
    bb("rmi", "loose")
    bb("rmi", "app")
    dry = json.loads(bb("builder", "prune", "--dry-run", "--json").stdout)
    real = json.loads(bb("builder", "prune", "--json").stdout)
    assert _without_dry_run(real) == _without_dry_run(dry)
    assert real["removed_build_cache_records"] == 1
    assert real["removed_blobs"] == 1  # the RUN layer; the manifest and config are prune's
    assert loose <= _blobs(bb)
    assert json.loads(bb("builder", "prune", "--json").stdout)["removed_blobs"] == 0
    assert _prune(bb)["removed_blobs"] == len(loose) + 2


# --------------------------------------------------------------------------- leases

HOLD_LEASE = """
import sys
from lamina.store.local import LocalStore
with LocalStore(sys.argv[1]).lease():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_prune_takes_nothing_while_a_lease_is_held(bb: Lamina) -> None:
    """A lease (an import, a pull, a build in progress) holds off every sweep of
    prune, not only the blob sweep: the snapshots it may be about to use stay."""
    bb("run", "--rm", "bb", "true")
    bb("rmi", "bb")
    snaps, blobs = _snapshots(bb), _blobs(bb)
    root = str(_root(bb))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LEASE), root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    prune = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        prune = subprocess.Popen(
            [*LAMINA, "--root", root, "prune", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert prune.poll() is None  # waiting for the lease
        assert (_snapshots(bb), _blobs(bb)) == (snaps, blobs)
    finally:
        holder.communicate(input="", timeout=30)
    out, err = prune.communicate(timeout=60)
    assert prune.returncode == 0, err
    report = json.loads(out)
    assert report["removed_blobs"] == 3 and report["removed_snapshots"] >= 2
