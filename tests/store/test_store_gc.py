"""Refs, leases and garbage collection of LocalStore."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import (
    Conflict,
    DigestMismatch,
    InvalidArgument,
    InvalidFormat,
    NotFound,
)
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import canonical_json
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform
from lamina.store import GCResult, GCRoots, LocalStore

Proc = subprocess.Popen[str]
Spawn = Callable[..., Proc]


def _put(store: LocalStore, data: bytes, media_type: str) -> Descriptor:
    info = store.put_bytes(data)
    return Descriptor(media_type, info.digest, info.size)


def _put_json(store: LocalStore, obj: dict[str, Any], media_type: str) -> Descriptor:
    return _put(store, canonical_json(obj), media_type)


def _manifest(
    store: LocalStore, tag: bytes, subject: Descriptor | None = None
) -> tuple[Descriptor, list[Descriptor]]:
    """A manifest with a config and two layers; returns it and its children."""
    config = _put(
        store, b'{"architecture":"amd64","os":"linux","tag":"' + tag + b'"}', mt.OCI_CONFIG
    )
    layers = [_put(store, os.urandom(100) + tag, mt.OCI_LAYER_GZIP) for _ in range(2)]
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if subject is not None:
        doc["subject"] = subject.to_json()
    return _put_json(store, doc, mt.OCI_MANIFEST), [config, *layers]


def _digests(store: LocalStore) -> set[Digest]:
    return {b.digest for b in store.iter_blobs()}


# -- refs ----------------------------------------------------------------------------------


def test_refs_roundtrip(store: LocalStore, root: Path) -> None:
    assert store.list_refs() == {}
    desc = Descriptor(
        mt.OCI_INDEX,
        Digest.from_bytes(b"i"),
        7,
        annotations={"org.opencontainers.image.ref.name": "1.0"},
        platform=Platform("linux", "arm64", variant="v8"),
    )
    name = "docker.io/library/busybox:latest"
    store.set_ref(name, desc)
    store.set_ref("ünïcode/name:tag", desc)
    assert store.get_ref(name) == desc
    assert LocalStore(root).list_refs() == {name: desc, "ünïcode/name:tag": desc}
    store.set_ref(name, desc)  # idempotent
    other = Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(b"m"), 3)
    store.set_ref(name, other)
    assert store.get_ref(name) == other
    store.delete_ref(name)
    with pytest.raises(NotFound):
        store.get_ref(name)
    with pytest.raises(NotFound):
        store.delete_ref(name)
    assert list(store.list_refs()) == ["ünïcode/name:tag"]


@pytest.mark.parametrize("name", ["", "a\nb", "nul\x00", "\ud800", "x" * 5000])
def test_bad_ref_names(store: LocalStore, name: str) -> None:
    with pytest.raises(InvalidArgument):
        store.set_ref(name, Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(b"m"), 3))


def test_corrupt_ref_index_is_reported(store: LocalStore, root: Path) -> None:
    (root / "refs.json").write_text('{"schemaVersion": 1, "refs": {"a": ')
    with pytest.raises(InvalidFormat):
        store.list_refs()
    with pytest.raises(InvalidFormat):
        store.set_ref("b", Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(b"m"), 3))
    (root / "refs.json").write_text(json.dumps({"schemaVersion": 1, "refs": {"a": {"x": 1}}}))
    with pytest.raises(InvalidFormat):
        store.list_refs()
    (root / "refs.json").write_text(json.dumps({"refs": {}}))
    with pytest.raises(InvalidFormat):
        store.get_ref("a")


# -- gc ------------------------------------------------------------------------------------


def test_gc_keeps_what_refs_reach_and_sweeps_the_rest(store: LocalStore) -> None:
    m1, m1_children = _manifest(store, b"1")
    m2, m2_children = _manifest(store, b"2")
    index = _put_json(
        store,
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [m1.to_json(), m2.to_json()]},
        mt.OCI_INDEX,
    )
    # An artifact (a signature) whose subject is an image no ref names directly.
    s_image, s_children = _manifest(store, b"s")
    artifact, artifact_children = _manifest(store, b"sig", subject=s_image)
    orphan_manifest, orphan_children = _manifest(store, b"orphan")
    orphan_blob = _put(store, b"lonely", "application/octet-stream")
    store.set_ref("example.com/app:1", index)
    store.set_ref("example.com/app:sig", artifact)

    keep = {d.digest for d in [index, m1, m2, artifact, s_image]}
    keep |= {d.digest for d in m1_children + m2_children + s_children + artifact_children}
    drop = {d.digest for d in [orphan_manifest, orphan_blob, *orphan_children]}
    assert _digests(store) == keep | drop

    dry = store.gc(dry_run=True)
    drop_bytes = sum(store.info(d).size for d in drop)
    assert dry == GCResult(len(drop), drop_bytes, len(keep), 0)
    assert _digests(store) == keep | drop  # dry run removes nothing

    assert store.gc() == dry
    assert _digests(store) == keep
    assert store.gc() == GCResult(0, 0, len(keep), 0)

    store.delete_ref("example.com/app:sig")
    result = store.gc()
    assert result.removed_blobs == 2 + 3 + 3  # artifact, subject image, their children
    assert _digests(store) == {d.digest for d in [index, m1, m2, *m1_children, *m2_children]}


def test_gc_follows_docker_manifest_lists(store: LocalStore) -> None:
    config = _put(store, b"{}", mt.DOCKER_CONFIG)
    layer = _put(store, b"layer", mt.DOCKER_LAYER_GZIP)
    manifest = _put_json(
        store,
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        },
        mt.DOCKER_MANIFEST,
    )
    mlist = _put_json(
        store,
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_LIST,
            "manifests": [manifest.to_json()],
        },
        mt.DOCKER_MANIFEST_LIST,
    )
    _put(store, b"garbage", "application/octet-stream")
    store.set_ref("docker.io/library/x:1", mlist)
    assert store.gc().removed_blobs == 1
    assert _digests(store) == {config.digest, layer.digest, manifest.digest, mlist.digest}


def test_gc_skips_missing_blobs(store: LocalStore) -> None:
    m, children = _manifest(store, b"partial")
    store.delete_blob(children[1].digest)  # a layer never pulled
    store.set_ref("partial", m)
    store.set_ref("gone", Descriptor(mt.OCI_INDEX, Digest.from_bytes(b"never stored"), 12))
    result = store.gc()
    assert result.removed_blobs == 0 and result.kept_blobs == 3


def test_gc_stops_on_a_damaged_manifest(store: LocalStore) -> None:
    m, children = _manifest(store, b"damaged")
    orphan = _put(store, b"orphan", "application/octet-stream")
    store.set_ref("damaged", m)
    path = store.blob_path(m.digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"[")
    with pytest.raises(DigestMismatch) as excinfo:
        store.gc()
    assert "damaged" in str(excinfo.value)
    assert excinfo.value.hint and "delete the ref" in excinfo.value.hint
    # Nothing was swept: the damaged manifest's children are unknown.
    assert _digests(store) == {m.digest, orphan.digest, *(c.digest for c in children)}


def test_gc_stops_on_a_malformed_manifest(store: LocalStore) -> None:
    bad = _put(store, b'{"schemaVersion": 2, "layers": "nope"}', mt.OCI_MANIFEST)
    _put(store, b"orphan", "application/octet-stream")
    store.set_ref("bad", bad)
    with pytest.raises(InvalidFormat):
        store.gc()
    assert len(_digests(store)) == 2


def test_gc_sniffs_manifests_typed_as_octet_stream(store: LocalStore) -> None:
    m, children = _manifest(store, b"untyped")
    store.set_ref("untyped", Descriptor("application/octet-stream", m.digest, m.size))
    assert store.gc().removed_blobs == 0
    assert _digests(store) == {m.digest, *(c.digest for c in children)}


# -- leases --------------------------------------------------------------------------------


def test_lease_is_reentrant_and_gc_refuses_inside_one(store: LocalStore, root: Path) -> None:
    other = LocalStore(root)
    with store.lease(), store.lease(), other.lease():
        with pytest.raises(Conflict):
            store.gc()
        with pytest.raises(Conflict):
            other.gc()
    # A lease held by another thread makes gc wait for it (not fail).
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lease():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    with pytest.raises(Conflict):
        store.gc(timeout=0.2)
    release.set()
    thread.join(5)
    assert store.gc(timeout=5).removed_blobs == 0


LEASE_HOLDER = """
    import sys
    from lamina.oci.descriptor import Descriptor
    from lamina.store import LocalStore
    store = LocalStore(sys.argv[1])
    with store.lease():
        info = store.put_bytes(b"written under a lease")
        print("ready", info.digest, flush=True)
        sys.stdin.readline()
        layer = Descriptor("application/vnd.oci.image.layer.v1.tar", info.digest, info.size)
        store.set_ref("leased", layer)
    print("released", flush=True)
    sys.stdin.readline()
"""


def test_lease_in_another_process_blocks_gc_until_released(
    store: LocalStore, root: Path, spawn: Spawn
) -> None:
    orphan = _put(store, b"orphan", "application/octet-stream")
    proc = spawn(LEASE_HOLDER, str(root))
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline().split()
    assert line[0] == "ready", line
    leased = Digest.parse(line[1])

    with pytest.raises(Conflict):
        store.gc(timeout=0.3)
    results: list[GCResult] = []
    gc_thread = threading.Thread(target=lambda: results.append(store.gc(timeout=20)))
    gc_thread.start()
    time.sleep(0.3)
    assert gc_thread.is_alive() and not results  # waiting for the lease
    assert store.has(leased)

    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    gc_thread.join(20)
    assert results == [GCResult(1, len(b"orphan"), 1, 0)]
    assert store.has(leased)  # named by a ref before the lease ended
    assert not store.has(orphan.digest)
    proc.communicate("exit\n", timeout=10)


HOLD_GC_LOCK = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_running_gc_blocks_new_leases_writers_and_ref_updates(
    store: LocalStore, root: Path, spawn: Spawn
) -> None:
    proc = spawn(HOLD_GC_LOCK, str(root / "locks" / "gc.lock"))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    with pytest.raises(Conflict):
        store.lease(timeout=0.2).__enter__()
    done = threading.Event()

    def set_ref() -> None:
        with store.writer() as w:  # a new writer waits for gc too
            w.write(b"m")
            info = w.commit()
        store.set_ref("x", Descriptor(mt.OCI_MANIFEST, info.digest, info.size))
        done.set()

    thread = threading.Thread(target=set_ref)
    thread.start()
    assert not done.wait(0.3)  # waits for the "gc"
    proc.communicate("done\n", timeout=10)
    assert done.wait(10)
    thread.join()
    assert "x" in store.list_refs()
    # The lease machinery is usable again, and no lease leaked from the timeout.
    with store.lease(timeout=1):
        pass
    fd = os.open(root / "locks" / "gc.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


# -- roots beyond the refs (containers, the build cache) -----------------------------------


def test_gc_keeps_an_image_in_use_that_no_ref_names(store: LocalStore) -> None:
    """A container records only its image ID (the config digest): gc finds the
    manifests that name that config among the unnamed blobs and keeps them whole."""
    used, used_children = _manifest(store, b"used")
    other, other_children = _manifest(store, b"other")
    config = used_children[0].digest
    # the same config under a second manifest (another compression): kept too
    twin = _put_json(
        store,
        {"schemaVersion": 2, "config": used_children[0].to_json(), "layers": []},
        "application/octet-stream",
    )
    roots = GCRoots(image_ids={config: "container abc"})
    with store.gc_lock():
        plan = store.plan_gc(roots)
    gone = {b.digest for b in plan.blobs}
    assert gone == {other.digest, *(d.digest for d in other_children)}
    kept = {used.digest, twin.digest, *(d.digest for d in used_children)}
    assert kept <= _digests(store)
    assert store.gc(roots=roots) == plan.result()
    assert _digests(store) == kept
    # a config with no manifest left is kept alone; an unknown ID keeps nothing
    store.delete_blob(used.digest)
    store.delete_blob(twin.digest)
    ghost = GCRoots(image_ids={config: "c", Digest.from_bytes(b"none"): "d"})
    assert store.gc(roots=ghost).removed_blobs == len(used_children) - 1
    assert _digests(store) == {config}


def test_gc_keeps_documents_and_blobs_given_as_roots(store: LocalStore) -> None:
    manifest, children = _manifest(store, b"m")
    layer = _put(store, b"cached layer", mt.OCI_LAYER_GZIP)
    loose = _put(store, b"loose", mt.OCI_LAYER_GZIP)
    roots = GCRoots(documents={"a build": manifest}, blobs={layer.digest: "cache record"})
    assert store.gc(roots=roots).removed_blobs == 1
    assert loose.digest not in _digests(store)
    assert {manifest.digest, layer.digest, *(d.digest for d in children)} == _digests(store)


def test_plan_gc_only_sweeps_the_candidates(store: LocalStore) -> None:
    a = _put(store, b"a", mt.OCI_LAYER_GZIP)
    b = _put(store, b"b", mt.OCI_LAYER_GZIP)
    with store.gc_lock():
        plan = store.plan_gc(only=frozenset({a.digest}))
        assert [info.digest for info in plan.blobs] == [a.digest]
        assert plan.kept_blobs == 1
        assert store.apply_gc(plan).removed_blobs == 1
    assert _digests(store) == {b.digest}


def test_plan_and_apply_need_the_gc_lock(store: LocalStore) -> None:
    with pytest.raises(Conflict, match="gc_lock"):
        store.plan_gc()
    with store.gc_lock():
        plan = store.plan_gc()
        with store.gc_lock():  # re-entrant in its thread
            assert store.gc(dry_run=True) == plan.result()
    with pytest.raises(Conflict, match="gc_lock"):
        store.apply_gc(plan)
    with store.lease(), pytest.raises(Conflict, match="holds a store lease"):
        store.gc_lock().__enter__()


def test_gc_lock_waits_for_leases_of_other_processes(store: LocalStore, spawn: Spawn) -> None:
    holder = spawn(
        """
        import sys
        from lamina.store.local import LocalStore
        with LocalStore(sys.argv[1]).lease():
            print("held", flush=True)
            sys.stdin.read()
        """,
        store.root,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    with pytest.raises(Conflict, match="timed out"), store.gc_lock(timeout=0.3):
        pass
    holder.communicate(input="", timeout=30)
    with store.gc_lock(timeout=5):
        assert store.plan_gc().blobs == ()
