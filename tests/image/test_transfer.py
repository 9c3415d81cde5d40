"""Pull and push orchestration (``lamina.image.transfer``) without HTTP: over an
in-memory registry that implements the Fetcher and Pusher Protocols (memory_remote.py).

What is tested is the orchestration's own work: which blobs move, what a failure leaves
behind, which platform an index resolves to, the order of pushes, the bound on blobs in
flight. The HTTP transport has its own tests against real registries (tests/registry).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from memory_remote import MemoryRegistry, MemoryRemote

from lamina.errors import DigestMismatch, NotFound
from lamina.image.api import EXISTS, FETCHED, MOUNTED, UPLOADED, Fetcher, Pusher
from lamina.image.transfer import (
    BlobSources,
    PullResult,
    PushResult,
    plan_push,
    pull_image,
    push_image,
    run_bounded,
)
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.registry.errors import RegistryError
from lamina.store.local import LocalStore


class Recorder:
    """A TransferProgress that keeps how each blob ended."""

    def __init__(self) -> None:
        self.started: list[Digest] = []
        self.finished: dict[Digest, str] = {}
        self.moved: dict[Digest, int] = {}

    def start(self, descriptor: Descriptor) -> None:
        self.started.append(descriptor.digest)

    def advance(self, descriptor: Descriptor, nbytes: int) -> None:
        self.moved[descriptor.digest] = self.moved.get(descriptor.digest, 0) + nbytes

    def restart(self, descriptor: Descriptor) -> None:
        self.moved[descriptor.digest] = 0

    def finish(self, descriptor: Descriptor, how: str) -> None:
        self.finished[descriptor.digest] = how


def _layers(n: int, size: int = 5000) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def _other_platform() -> Platform:
    host = Platform.host()
    return Platform("linux", "riscv64" if host.architecture != "riscv64" else "s390x")


def _pull(
    registry: MemoryRegistry,
    store: LocalStore,
    ref: Reference,
    *,
    platform: Platform | None = None,
    parallel: int = 6,
    progress: Recorder | None = None,
) -> PullResult:
    async def go() -> PullResult:
        async with MemoryRemote(registry) as remote:
            return await pull_image(
                remote,
                store,
                ref,
                platform=platform,
                progress=progress or Recorder(),
                parallel=parallel,
            )

    return asyncio.run(go())


def _push(
    registry: MemoryRegistry,
    store: LocalStore,
    top: Descriptor,
    dest: Reference,
    *,
    parallel: int = 4,
    mount_sources: Callable[[Digest], tuple[str, ...]] | None = None,
    progress: Recorder | None = None,
) -> PushResult:
    plan = plan_push(store, top)

    async def go() -> PushResult:
        async with MemoryRemote(registry) as remote:
            return await push_image(
                remote,
                store,
                plan,
                dest,
                progress=progress or Recorder(),
                parallel=parallel,
                mount_sources=mount_sources,
            )

    return asyncio.run(go())


def _stored_image(store: LocalStore, name: str, layers: list[bytes]) -> Descriptor:
    """An image put in ``store`` by pulling it from a scratch registry."""
    scratch = MemoryRegistry()
    scratch.put_image("scratch", "1", layers)
    result = _pull(scratch, store, scratch.ref("scratch"))
    store.set_ref(name, result.descriptor)
    return result.descriptor


def test_memory_remote_is_a_fetcher_and_a_pusher() -> None:
    remote = MemoryRemote(MemoryRegistry())
    # mypy checks these assignments against the Protocols
    fetcher: Fetcher = remote
    pusher: Pusher = remote
    assert isinstance(fetcher, MemoryRemote) and isinstance(pusher, MemoryRemote)


def test_full_pull(store: LocalStore) -> None:
    registry = MemoryRegistry()
    layers = _layers(3)
    top, manifest = registry.put_image("app", "1", layers)
    progress = Recorder()
    result = _pull(registry, store, registry.ref("app"), progress=progress)

    assert result.name == "memory.test/app:1"
    assert result.top == result.manifest == result.descriptor == top
    assert result.fetched == 4 and result.fetched_bytes == sum(b.size for b in result.blobs)
    assert store.get_ref(result.name).digest == top.digest
    assert store.read_blob(top.digest) == registry.repo("app").manifests["1"][1]
    for layer, data in zip(manifest.layers, layers, strict=True):
        assert store.read_blob(layer.digest, max_size=len(data)) == data
    assert set(progress.finished.values()) == {FETCHED}
    assert progress.moved == {b.digest: b.size for b in result.blobs}
    assert os.listdir(Path(store.root) / "ingest") == []


def test_pull_skips_blobs_the_store_has(store: LocalStore) -> None:
    registry = MemoryRegistry()
    layers = _layers(3)
    _, manifest = registry.put_image("app", "1", layers)
    store.put_bytes(layers[1])
    progress = Recorder()
    result = _pull(registry, store, registry.ref("app"), progress=progress)

    assert result.fetched == 3
    assert progress.finished[manifest.layers[1].digest] == EXISTS
    fetched = [d for kind, d in registry.events if kind == "fetch_blob"]
    assert str(manifest.layers[1].digest) not in fetched and len(fetched) == 3

    # pulled again, nothing moves
    registry.events.clear()
    again = _pull(registry, store, registry.ref("app"))
    assert again.fetched == 0 and again.fetched_bytes == 0
    assert [kind for kind, _ in registry.events] == ["fetch_manifest"]


def test_blob_failing_verification_leaves_nothing_named(store: LocalStore) -> None:
    registry = MemoryRegistry()
    top, manifest = registry.put_image("app", "1", _layers(4))
    bad = manifest.layers[2]
    registry.corrupt.add(bad.digest)

    with pytest.raises(DigestMismatch):
        _pull(registry, store, registry.ref("app"), parallel=1)

    assert store.list_refs() == {}
    assert not store.has(top.digest)  # no manifest stored
    assert not store.has(bad.digest)  # no unverified byte
    assert os.listdir(Path(store.root) / "ingest") == []

    # the next attempt, against a healed registry, reuses what did verify
    registry.corrupt.clear()
    kept = [b for b in (manifest.config, *manifest.layers) if store.has(b.digest)]
    result = _pull(registry, store, registry.ref("app"))
    assert result.fetched == 5 - len(kept)
    assert store.get_ref(result.name).digest == top.digest


def test_missing_blob_leaves_nothing_named(store: LocalStore) -> None:
    registry = MemoryRegistry()
    top, manifest = registry.put_image("app", "1", _layers(2))
    del registry.repo("app").blobs[manifest.layers[0].digest]
    with pytest.raises(NotFound):
        _pull(registry, store, registry.ref("app"))
    assert store.list_refs() == {} and not store.has(top.digest)


def _multi_platform(registry: MemoryRegistry) -> tuple[Descriptor, dict[Platform, Descriptor]]:
    children = {}
    entries = []
    for platform in (Platform.host(), _other_platform()):
        desc, _ = registry.put_image("multi", None, _layers(2), platform)
        children[platform] = desc
        entries.append(Descriptor(desc.media_type, desc.digest, desc.size, platform=platform))
    data = Index(tuple(entries)).to_bytes()
    return registry.put_manifest("multi", "1", data, mt.OCI_INDEX), children


def test_pull_index_selects_the_platform(store: LocalStore, tmp_path: Path) -> None:
    registry = MemoryRegistry()
    index, children = _multi_platform(registry)
    other = _other_platform()
    chosen = children[other]
    unchosen = children[Platform.host()]

    result = _pull(registry, store, registry.ref("multi"), platform=other)
    assert result.top == index and result.manifest == chosen
    # an explicit platform other than the host's: the name points at its manifest
    assert result.descriptor == chosen
    assert store.get_ref("memory.test/multi:1").digest == chosen.digest
    assert store.has(index.digest) and store.has(chosen.digest)
    assert not store.has(unchosen.digest)
    fetched = {d for kind, d in registry.events if kind == "fetch_blob"}
    assert fetched == {str(b.digest) for b in result.blobs}
    assert ("fetch_manifest", str(unchosen.digest)) not in registry.events

    # the host's choice: the name points at the index
    host_store = LocalStore(tmp_path / "host")
    host = _pull(registry, host_store, registry.ref("multi"))
    assert host.manifest == unchosen and host.descriptor == index
    assert host_store.get_ref("memory.test/multi:1").digest == index.digest


def test_pull_index_with_no_matching_platform(store: LocalStore) -> None:
    registry = MemoryRegistry()
    _multi_platform(registry)
    with pytest.raises(NotFound):
        _pull(registry, store, registry.ref("multi"), platform=Platform("windows", "arm"))
    assert store.list_refs() == {}


def test_push_sends_only_missing_blobs(store: LocalStore) -> None:
    layers = _layers(3)
    top = _stored_image(store, "app", layers)
    registry = MemoryRegistry()
    plan = plan_push(store, top)
    registry.put_blob("app", layers[0])  # the destination has one layer already
    progress = Recorder()
    result = _push(registry, store, top, registry.ref("app", "v1"), progress=progress)

    assert (result.uploaded, result.mounted, result.existed) == (3, 0, 1)
    assert result.uploaded_bytes == sum(b.size for b in plan.blobs) - len(layers[0])
    first = Digest.from_bytes(layers[0])
    assert progress.finished[first] == EXISTS
    assert ("upload_blob", str(first)) not in registry.events
    assert registry.repo("app").manifests["v1"][1] == store.read_blob(top.digest)

    registry.events.clear()
    again = _push(registry, store, top, registry.ref("app", "v1"))
    assert (again.uploaded, again.existed) == (0, 4)
    assert [k for k, _ in registry.events if k != "has_blob"] == ["push_manifest"]


def test_push_mounts_from_known_sources(store: LocalStore, tmp_path: Path) -> None:
    layers = _layers(2)
    top = _stored_image(store, "app", layers)
    registry = MemoryRegistry()
    registry.put_blob("base", layers[1])
    shared = Digest.from_bytes(layers[1])
    sources = BlobSources(str(tmp_path / "root"))
    sources.record(registry.host, "base", [shared])
    sources.record("elsewhere.test", "other", [Digest.from_bytes(layers[0])])
    progress = Recorder()
    result = _push(
        registry,
        store,
        top,
        registry.ref("app"),
        mount_sources=lambda d: sources.lookup(registry.host, d),
        progress=progress,
    )

    assert (result.uploaded, result.mounted, result.existed) == (2, 1, 0)
    assert progress.finished[shared] == MOUNTED
    assert ("mount_blob", str(shared)) in registry.events
    assert ("upload_blob", str(shared)) not in registry.events
    # a source of another registry is not asked for
    assert progress.finished[Digest.from_bytes(layers[0])] == UPLOADED


def test_push_a_wrong_mount_source_falls_back_to_upload(store: LocalStore) -> None:
    layers = _layers(1)
    top = _stored_image(store, "app", layers)
    registry = MemoryRegistry()
    result = _push(registry, store, top, registry.ref("app"), mount_sources=lambda d: ("gone",))
    assert (result.uploaded, result.mounted) == (2, 0)


def test_push_order_blobs_then_children_then_index(store: LocalStore) -> None:
    source = MemoryRegistry()
    index, children = _multi_platform(source)
    # the whole index into the store: pull each platform, then the index itself
    for platform in children:
        _pull(source, store, source.ref("multi"), platform=platform)
    top = store.get_ref("memory.test/multi:1")
    if top.digest != index.digest:  # the last pull named a platform manifest
        store.set_ref("memory.test/multi:1", index)
    plan = plan_push(store, index)
    assert [d.digest for d, _ in plan.manifests] == [
        *(c.digest for c in children.values()),
        index.digest,
    ]

    registry = MemoryRegistry()
    result = _push(registry, store, index, registry.ref("copy", "2"), parallel=3)
    assert result.descriptor == Descriptor(index.media_type, index.digest, index.size)
    kinds = [k for k, _ in registry.events]
    first_manifest = kinds.index("push_manifest")
    assert all(k == "push_manifest" for k in kinds[first_manifest:])
    assert result.uploaded == len(plan.blobs)
    manifests = [t for k, t in registry.events if k == "push_manifest"]
    # children by digest, then the index under the tag, last
    assert manifests == [*(str(c.digest) for c in children.values()), "2"]


def test_push_by_digest_only_names_the_digest(store: LocalStore) -> None:
    top = _stored_image(store, "app", _layers(1))
    registry = MemoryRegistry()
    _push(registry, store, top, registry.ref("app", None))
    assert [t for k, t in registry.events if k == "push_manifest"] == [str(top.digest)]


@pytest.mark.parametrize("parallel", [1, 2, 5])
def test_pull_bounds_blobs_in_flight(store: LocalStore, parallel: int) -> None:
    registry = MemoryRegistry()
    registry.put_image("app", "1", _layers(7))
    _pull(registry, store, registry.ref("app"), parallel=parallel)
    assert registry.max_in_flight == parallel


@pytest.mark.parametrize("parallel", [1, 3])
def test_push_bounds_blobs_in_flight(store: LocalStore, parallel: int) -> None:
    top = _stored_image(store, "app", _layers(6))
    registry = MemoryRegistry()
    _push(registry, store, top, registry.ref("app"), parallel=parallel)
    assert registry.max_in_flight == parallel


def test_run_bounded_raises_the_first_failure_and_cancels_the_rest() -> None:
    cancelled = []

    def job(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await asyncio.sleep(0 if i == 1 else 5)
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            raise RegistryError("DENIED", f"job {i}")

        return run

    async def go() -> None:
        await run_bounded([job(i) for i in range(4)], 3)

    started = time.monotonic()
    with pytest.raises(RegistryError, match="job 1"):
        asyncio.run(go())
    # the others were cancelled, not waited for (job 3 may have started in job 1's slot)
    assert {0, 2} <= set(cancelled) <= {0, 2, 3}
    assert time.monotonic() - started < 4
