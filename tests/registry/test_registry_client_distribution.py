"""lamina's registry client against Debian's docker-registry (distribution 2.8.2), over
real HTTP on loopback, through a counting proxy where the test needs to count or cut."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_client_support import (
    DockerRegistry,
    Fault,
    Proxy,
    api_pull,
    api_push,
    api_unpack,
    start_docker_registry,
)
from registry_client_support import lamina_cli as run

from helpers.images import import_busybox, make_random_image, tree_contents
from lamina.errors import DigestMismatch, SizeMismatch
from lamina.image.api import NoProgress
from lamina.image.transfer.pull import pull_image
from lamina.oci.reference import Reference
from lamina.registry.client.remote import RegistryClient
from lamina.registry.client.transport import Transport
from lamina.store.local import LocalStore

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    reg = start_docker_registry(tmp_path_factory.mktemp("docker-registry"))
    yield reg
    reg.stop()


@pytest.fixture
def proxy(registry: DockerRegistry) -> Iterator[Proxy]:
    p = Proxy(registry.host).start()
    yield p
    p.stop()


def ingest_temps(root: Path) -> list[str]:
    return os.listdir(root / "ingest")


def test_push_pull_round_trip_same_tree(
    tmp_path: Path, registry: DockerRegistry, busybox_rootfs: Path
) -> None:
    src = tmp_path / "src"
    import_busybox(LocalStore(src), str(busybox_rootfs), "docker.io/library/busybox:latest")
    dest = f"{registry.host}/lamina/busybox:1"
    out = run(src, "push", "busybox", dest, "--json")
    pushed = json.loads(out.stdout)
    assert pushed["uploaded"] == pushed["blobs"] == 2  # one layer and the config

    fresh = tmp_path / "fresh"
    out = run(fresh, "pull", dest)
    assert out.stdout.strip() == f"Pulled {dest} ({pushed['digest']})"
    images = json.loads(run(fresh, "images", "--json").stdout)
    assert [(i["repository"], i["tag"]) for i in images] == [
        (f"{registry.host}/lamina/busybox", "1")
    ]

    api_unpack(src, "busybox", tmp_path / "a")
    run(fresh, "unpack", dest, str(tmp_path / "b"))
    assert tree_contents(str(tmp_path / "a")) == tree_contents(str(tmp_path / "b"))
    assert ingest_temps(fresh) == []

    # pulling again transfers nothing
    again = json.loads(run(fresh, "pull", dest, "--json").stdout)
    assert again["fetched"] == 0 and again["digest"] == pushed["digest"]


@pytest.mark.root
def test_pulled_image_runs(tmp_path: Path, registry: DockerRegistry, busybox_rootfs: Path) -> None:
    src = tmp_path / "src"
    import_busybox(LocalStore(src), str(busybox_rootfs), "docker.io/library/busybox:latest")
    dest = f"{registry.host}/lamina/runme:latest"
    run(src, "push", "-q", "busybox", dest)
    fresh = tmp_path / "fresh"
    run(fresh, "pull", "-q", dest)
    out = run(fresh, "run", "--rm", dest, "echo", "hello from the registry")
    assert out.stdout.strip() == "hello from the registry"


def test_incremental_push_sends_only_new_blobs(tmp_path: Path, proxy: Proxy) -> None:
    src = tmp_path / "src"
    store = LocalStore(src)
    make_random_image(store, "docker.io/library/base:1", seed=7, layers=3, max_file_size=50_000)
    make_random_image(store, "docker.io/library/more:1", seed=7, layers=4, max_file_size=50_000)
    first = api_push(src, "base:1", f"{proxy.host}/inc/app:1")
    assert first.uploaded == 4 and proxy.blob_uploads() == 4
    proxy.reset()
    second = api_push(src, "more:1", f"{proxy.host}/inc/app:2")
    # three shared layers exist; the new layer and the new config are sent
    assert (second.existed, second.uploaded) == (3, 2)
    assert proxy.blob_uploads() == 2
    assert proxy.count("HEAD", "/blobs/sha256:") == 5


def test_cross_repository_mount(tmp_path: Path, proxy: Proxy) -> None:
    src = tmp_path / "src"
    make_random_image(LocalStore(src), "docker.io/library/m:1", seed=11, layers=2)
    run(src, "push", "m:1", f"{proxy.host}/mount/one:1")
    proxy.reset()
    out = json.loads(run(src, "push", "m:1", f"{proxy.host}/mount/two:1", "--json").stdout)
    assert (out["mounted"], out["uploaded"]) == (3, 0)
    assert proxy.count("POST", "mount=", status=201) == 3
    assert proxy.blob_uploads() == 0


def test_pull_by_digest(tmp_path: Path, registry: DockerRegistry) -> None:
    src = tmp_path / "src"
    make_random_image(LocalStore(src), "docker.io/library/d:1", seed=3, layers=2)
    digest = api_push(src, "d:1", f"{registry.host}/bydigest/d:1").descriptor.digest
    ref = f"{registry.host}/bydigest/d@{digest}"
    fresh = tmp_path / "fresh"
    out = json.loads(run(fresh, "pull", ref, "--json").stdout)
    assert out["name"] == ref and out["digest"] == str(digest)
    api_unpack(fresh, ref, tmp_path / "tree")
    # a digest the registry does not have is NotFound (exit 2)
    missing = f"{registry.host}/bydigest/d@sha256:{'0' * 64}"
    bad = run(fresh, "pull", missing, check=False)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_pull_unknown_tag_is_not_found(tmp_path: Path, registry: DockerRegistry) -> None:
    out = run(tmp_path / "r", "pull", f"{registry.host}/nothing/here:1", check=False)
    assert out.returncode == 2
    assert "error: manifest" in out.stderr and "not found" in out.stderr


def test_corrupted_blob_is_detected_and_nothing_stored(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reg = start_docker_registry(tmp_path_factory.mktemp("corrupt-registry"))
    try:
        src = tmp_path / "src"
        image = make_random_image(LocalStore(src), "docker.io/library/c:1", seed=5, layers=1)
        api_push(src, "c:1", f"{reg.host}/c/c:1")
        layer = image.layers[0].descriptor
        data = reg.blob_data_path(str(layer.digest))
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # same size, different bytes
        data.write_bytes(bytes(raw))

        fresh = tmp_path / "fresh"
        out = run(fresh, "pull", f"{reg.host}/c/c:1", check=False)
        assert out.returncode == 5, out.stderr  # IntegrityError
        assert "digest" in out.stderr and str(layer.digest) in out.stderr
        store = LocalStore(fresh)
        assert not store.has(layer.digest)
        assert store.list_refs() == {}
        assert ingest_temps(fresh) == []

        async def pull() -> None:
            async with RegistryClient(Transport(lambda r: None)) as client:
                await pull_image(
                    client, store, Reference.parse(f"{reg.host}/c/c:1"), progress=NoProgress()
                )

        with pytest.raises(DigestMismatch):
            asyncio.run(pull())
    finally:
        reg.stop()


def test_dropped_connection_mid_blob_pull_is_resumed(tmp_path: Path, proxy: Proxy) -> None:
    src = tmp_path / "src"
    image = make_random_image(
        LocalStore(src),
        "docker.io/library/drop:1",
        seed=9,
        layers=1,
        files_per_layer=60,
        max_file_size=100_000,
        compression="",
    )
    api_push(src, "drop:1", f"{proxy.host}/drop/pull:1")
    layer = image.layers[0].descriptor
    assert layer.size > 1_000_000
    proxy.reset()
    proxy.faults.append(Fault("GET", f"/blobs/{layer.digest}", after=layer.size // 2))
    fresh = tmp_path / "fresh"
    api_pull(fresh, f"{proxy.host}/drop/pull:1")
    assert proxy.cuts == 1
    # the retry asked for the rest only
    assert proxy.count("GET", f"/blobs/{layer.digest}") == 2
    api_unpack(fresh, f"{proxy.host}/drop/pull:1", tmp_path / "tree")
    assert tree_contents(str(tmp_path / "tree")) == image.expected


def test_dropped_connection_mid_upload_is_resumed(tmp_path: Path, proxy: Proxy) -> None:
    src = tmp_path / "src"
    image = make_random_image(
        LocalStore(src),
        "docker.io/library/up:1",
        seed=10,
        layers=1,
        files_per_layer=60,
        max_file_size=100_000,
        compression="",
    )
    layer = image.layers[0].descriptor
    proxy.faults.append(Fault("PATCH", "/blobs/uploads/", after=layer.size // 3))
    run(src, "push", "up:1", f"{proxy.host}/drop/push:1")
    assert proxy.cuts == 1
    assert proxy.count("GET", "/blobs/uploads/") >= 1  # asked the upload's status
    fresh = tmp_path / "fresh"
    api_pull(fresh, f"{proxy.host}/drop/push:1")
    api_unpack(fresh, f"{proxy.host}/drop/push:1", tmp_path / "tree")
    assert tree_contents(str(tmp_path / "tree")) == image.expected


def test_upload_resumes_from_the_offset_the_registry_reports(tmp_path: Path, proxy: Proxy) -> None:
    store = LocalStore(tmp_path / "src")
    image = make_random_image(
        store,
        "docker.io/library/chunks:1",
        seed=12,
        layers=1,
        files_per_layer=120,
        max_file_size=100_000,
        compression="",
    )
    layer = image.layers[0].descriptor
    chunk = 1 << 20
    assert layer.size > 3 * chunk
    # the third PATCH is cut half-way: the registry holds two whole chunks
    proxy.faults.append(Fault("PATCH", "/blobs/uploads/", after=chunk // 2, skip=2))
    dest = Reference.parse(f"{proxy.host}/chunks/app:1")

    async def push() -> str:
        async with RegistryClient(Transport(lambda r: None), chunk_size=chunk) as client:
            return await client.push_blob(dest, layer, store, NoProgress())

    assert asyncio.run(push()) == "uploaded"
    assert proxy.cuts == 1
    chunks = -(-layer.size // chunk)
    statuses = [s for m, p, s in proxy.requests if m == "PATCH"]
    assert statuses == [202, 202, -1] + [202] * (chunks - 2)
    assert proxy.count("GET", "/blobs/uploads/", status=204) == 1
    assert proxy.blob_uploads() == 1


def test_5xx_and_429_are_retried(tmp_path: Path, proxy: Proxy) -> None:
    src = tmp_path / "src"
    image = make_random_image(LocalStore(src), "docker.io/library/flaky:1", seed=13, layers=1)
    api_push(src, "flaky:1", f"{proxy.host}/flaky/app:1")
    layer = image.layers[0].descriptor
    proxy.reset()
    proxy.faults += [
        Fault("GET", "/manifests/1", after=0, count=2, status=503),
        Fault("GET", f"/blobs/{layer.digest}", after=0, status=429),
        Fault("GET", f"/blobs/{layer.digest}", after=0, status=502),
    ]
    result = api_pull(tmp_path / "fresh", f"{proxy.host}/flaky/app:1")
    assert result.fetched == 2
    assert [s for m, p, s in proxy.requests if "/manifests/" in p] == [503, 503, 200]
    assert [s for m, p, s in proxy.requests if str(layer.digest) in p] == [429, 502, 200]


def test_a_registry_that_keeps_failing_gives_a_clear_error(tmp_path: Path, proxy: Proxy) -> None:
    proxy.faults.append(Fault("GET", "/manifests/", after=0, count=100, status=500))
    out = run(tmp_path / "r", "pull", f"{proxy.host}/broken/app:1", check=False)
    assert out.returncode == 9, out.stderr  # ToolError
    assert "answered HTTP 500" in out.stderr
    assert proxy.count("GET", "/manifests/") == 6  # the first try and five retries


def test_a_blob_longer_than_its_descriptor_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reg = start_docker_registry(tmp_path_factory.mktemp("long-registry"))
    try:
        src = tmp_path / "src"
        image = make_random_image(LocalStore(src), "docker.io/library/l:1", seed=14, layers=1)
        api_push(src, "l:1", f"{reg.host}/l/l:1")
        layer = image.layers[0].descriptor
        data = reg.blob_data_path(str(layer.digest))
        data.write_bytes(data.read_bytes() + b"x" * 100_000)
        fresh = tmp_path / "fresh"
        with pytest.raises(SizeMismatch, match="more than"):
            api_pull(fresh, f"{reg.host}/l/l:1")
        store = LocalStore(fresh)
        assert not store.has(layer.digest) and store.list_refs() == {}
        assert ingest_temps(fresh) == []
    finally:
        reg.stop()
