"""The build cache: content keys (no mtimes), what busts what, --no-cache, reproducible
digests, records that outlive their blobs, and a build killed mid-RUN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.builder.cache import BuildCache, CacheRecord, cache_key
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store.local import LocalStore

DOCKERFILE = """\
FROM busybox
COPY first.txt /first.txt
RUN echo one > /one
ARG FLAVOUR=plain
LABEL flavour=$FLAVOUR
COPY second.txt /second.txt
RUN echo "two $FLAVOUR" > /two
RUN echo three > /three
"""


def context(lamina: Lamina, tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    lamina("bootstrap", "busybox", "-t", "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "first.txt").write_text("first\n")
    (ctx / "second.txt").write_text("second\n")
    return ctx


def build(lamina: Lamina, ctx: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """Build with JSON progress; returns {"steps": {name: "cached"|"done"}, "id": ...}."""
    proc = lamina("build", "--progress", "json", *args, str(ctx), env=env)
    names: dict[int, str] = {}
    steps: dict[str, str] = {}
    result: dict = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["kind"] == "start":
            names[event["vertex"]] = event["name"]
        elif event["kind"] in ("cached", "done"):
            name = names[event["vertex"]]
            if "] " in name and "FROM" not in name:
                steps[name.split("] ", 1)[1]] = event["kind"]
        elif event["kind"] == "result":
            result = event
    return {**result, "steps": steps}


def test_record_roundtrip_and_missing_blob_is_a_miss(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    cache = BuildCache(store.root)
    blob = store.put_bytes(b"layer bytes")
    layer = Descriptor(mt.OCI_LAYER_BY_COMPRESSION["gzip"], blob.digest, blob.size)
    key = cache_key("parent", "RUN", ["sh", "-c", "x"])
    assert key != cache_key("parent", "RUN", ["sh", "-c", "y"])
    record = CacheRecord(layer, Digest.from_bytes(b"tar"), "2024-01-01T00:00:00Z")
    assert cache.get(key, store) is None
    cache.put(key, record)
    assert cache.get(key, store) == record
    empty_key = cache_key(key, "RUN", ["true"])
    cache.put(empty_key, CacheRecord(None, None, "2024-01-01T00:00:00Z"))
    assert cache.keys() == sorted([key, empty_key])
    store.delete_blob(blob.digest)  # what `lamina prune` does to a blob no image names
    assert cache.get(key, store) is None
    assert cache.keys() == [empty_key]  # the stale record is gone too
    assert cache.prune() == 1
    assert cache.keys() == []


def test_mtime_does_not_bust_content_busts_from_that_step_on(
    lamina: Lamina, tmp_path: Path
) -> None:
    ctx = context(lamina, tmp_path)
    first = build(lamina, ctx, "-t", "c")
    assert set(first["steps"].values()) == {"done"}
    os.utime(ctx / "first.txt", (1, 1))
    os.utime(ctx / "second.txt")
    again = build(lamina, ctx, "-t", "c")
    assert set(again["steps"].values()) == {"cached"}
    assert again["id"] == first["id"]  # a fully cached rebuild is the same image
    (ctx / "second.txt").write_text("changed\n")
    changed = build(lamina, ctx, "-t", "c")
    assert changed["steps"] == {
        "COPY first.txt /first.txt": "cached",
        "RUN echo one > /one": "cached",
        "COPY second.txt /second.txt": "done",
        'RUN echo "two $FLAVOUR" > /two': "done",
        "RUN echo three > /three": "done",
    }
    assert lamina("run", "--rm", "c", "cat", "/second.txt").stdout == "changed\n"


def test_arg_change_busts_the_first_step_that_uses_it(lamina: Lamina, tmp_path: Path) -> None:
    ctx = context(lamina, tmp_path)
    build(lamina, ctx, "-t", "a")
    spicy = build(lamina, ctx, "-t", "a", "--build-arg", "FLAVOUR=spicy")
    assert spicy["steps"] == {
        "COPY first.txt /first.txt": "cached",
        "RUN echo one > /one": "cached",
        "COPY second.txt /second.txt": "cached",  # the ARG is in scope but COPY does not use it
        'RUN echo "two $FLAVOUR" > /two': "done",
        "RUN echo three > /three": "done",
    }
    assert lamina("run", "--rm", "a", "cat", "/two").stdout == "two spicy\n"
    labels = json.loads(lamina("inspect", "--raw", "config", "a").stdout)["config"]["Labels"]
    assert labels == {"flavour": "spicy"}
    # back to the default: every step is in the cache already
    plain = build(lamina, ctx, "-t", "a")
    assert set(plain["steps"].values()) == {"cached"}


def test_metadata_change_does_not_bust_later_steps(lamina: Lamina, tmp_path: Path) -> None:
    ctx = context(lamina, tmp_path)
    build(lamina, ctx)
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("LABEL flavour", "LABEL taste"))
    result = build(lamina, ctx)
    assert set(result["steps"].values()) == {"cached"}


def test_no_cache_runs_every_step(lamina: Lamina, tmp_path: Path) -> None:
    ctx = context(lamina, tmp_path)
    build(lamina, ctx)
    result = build(lamina, ctx, "--no-cache")
    assert set(result["steps"].values()) == {"done"}
    assert result["cached"] == 0


def test_source_date_epoch_gives_the_same_digest_on_another_day(
    lamina: Lamina, tmp_path: Path
) -> None:
    ctx = context(lamina, tmp_path)
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = build(lamina, ctx, "-t", "repro", env=env)
    config = json.loads(lamina("inspect", "--raw", "config", "repro").stdout)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in config["history"][1:]} == {"2023-11-14T22:13:20Z"}
    lamina("rmi", "repro")
    root = Path(lamina.root)  # type: ignore[attr-defined]
    BuildCache(str(root)).prune()
    lamina("prune")
    time.sleep(1.1)  # another second: every file the steps write gets a new mtime
    for name in ("first.txt", "second.txt"):
        os.utime(ctx / name)
    second = build(lamina, ctx, "-t", "repro", env=env)
    assert set(second["steps"].values()) == {"done"}
    assert second["manifest"] == first["manifest"]
    assert second["id"] == first["id"]


def test_prune_drops_what_only_the_cache_needed(lamina: Lamina, tmp_path: Path) -> None:
    ctx = context(
        lamina,
        tmp_path,
        "FROM busybox AS builder\nRUN echo made > /made; echo junk > /junk\n"
        "FROM busybox\nCOPY --from=builder /made /made\n",
    )
    build(lamina, ctx, "-t", "kept")
    lamina("prune")  # the build cache stays: every step is still cached
    assert set(build(lamina, ctx, "-t", "kept")["steps"].values()) == {"cached"}
    # the builder stage's layer is named by no image: with the cache, it goes
    lamina("prune", "--build-cache")
    again = build(lamina, ctx, "-t", "kept")
    assert again["steps"] == {
        "COPY --from=builder /made /made": "cached",
        "RUN echo made > /made; echo junk > /junk": "done",
    }
    assert lamina("run", "--rm", "kept", "cat", "/made").stdout == "made\n"


def _mounted_under(root: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(str(root) + "/")]


@pytest.mark.slow
def test_build_killed_mid_run_then_the_next_build_succeeds(lamina: Lamina, tmp_path: Path) -> None:
    ctx = context(lamina, tmp_path, "FROM busybox\nARG DELAY=0\nRUN sleep $DELAY; echo ok > /ok\n")
    root = Path(lamina.root)  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [*LAMINA, "--root", str(root), "build", "--progress", "plain", "--build-arg", "DELAY=60",
         "-t", "slow", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        work = root / "build" / "work"
        while time.monotonic() < deadline:
            running = subprocess.run(
                ["runc", "--root", str(root / "runtime" / "runc"), "list", "-q"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if any(r.startswith("lamina-build-") for r in running):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the RUN step never started")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        # Not communicate(): the killed build's container may still hold the pipes open.
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
    assert list(work.iterdir())  # the killed build's leftovers are there...
    result = build(lamina, ctx, "-t", "slow")
    assert result["steps"] == {"RUN sleep $DELAY; echo ok > /ok": "done"}
    assert lamina("run", "--rm", "slow", "cat", "/ok").stdout == "ok\n"
    assert not list(work.iterdir())  # ...and the next build removed them
    assert not _mounted_under(root / "build")
    running = subprocess.run(
        ["runc", "--root", str(root / "runtime" / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert not [r for r in running if r.startswith("lamina-build-")]
    meta = json.loads((root / "snapshots" / "metadata.json").read_text())
    assert "build-" not in json.dumps(meta)
    assert "slow" in lamina("images").stdout
    lamina("prune")
    assert lamina("run", "--rm", "slow", "cat", "/ok").stdout == "ok\n"
