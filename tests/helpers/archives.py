"""Helpers and fixtures of the image archive tests (the fixtures are re-exported by
tests/image/conftest.py): a store, small images built directly from tar
bytes (no importer needed), a private containerd, and a runner for the peer tools."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from lamina.layers.api import Entry, EntryType
from lamina.layers.tar import TarWriter
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import canonical_json
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.store.local import LocalStore

# path -> content (bytes: a file, None: a directory, str: a symlink target)
Tree = Mapping[str, bytes | str | None]


@dataclass(frozen=True)
class BuiltImage:
    ref: Reference
    descriptor: Descriptor  # of the manifest
    manifest: Manifest
    diff_ids: tuple[Digest, ...]
    layer_tars: tuple[bytes, ...]  # uncompressed


def layer_tar(tree: Tree) -> bytes:
    """A deterministic uncompressed layer tar of ``tree``."""
    out = io.BytesIO()
    w = TarWriter(out)
    for name in sorted(tree):
        value = tree[name]
        if value is None:
            w.add_bytes(Entry(name, EntryType.DIR, mode=0o755), b"")
        elif isinstance(value, str):
            w.add_bytes(Entry(name, EntryType.SYMLINK, mode=0o777, linkname=value), b"")
        else:
            w.add_bytes(Entry(name, EntryType.FILE, mode=0o644, size=len(value)), value)
    w.close()
    return out.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def build_image(
    store: LocalStore,
    name: str = "example.com/test/app:1",
    layers: Sequence[Tree] = ({"hello.txt": b"hello\n"},),
    *,
    compression: str = "gzip",
    cmd: Sequence[str] = ("/bin/sh",),
    tag: bool = True,
) -> BuiltImage:
    """Put a small image into ``store`` (layers, config, manifest) and tag it ``name``."""
    descs: list[Descriptor] = []
    diff_ids: list[Digest] = []
    tars: list[bytes] = []
    for tree in layers:
        raw = layer_tar(tree)
        blob = compress(raw, compression)
        info = store.put_bytes(blob)
        descs.append(Descriptor(mt.OCI_LAYER_BY_COMPRESSION[compression], info.digest, info.size))
        diff_ids.append(Digest.from_bytes(raw))
        tars.append(raw)
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": list(cmd), "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                for i in range(len(layers))
            ],
        }
    )
    cinfo = store.put_bytes(config)
    manifest = Manifest(
        config=Descriptor(mt.OCI_CONFIG, cinfo.digest, cinfo.size), layers=tuple(descs)
    )
    store.put_bytes(manifest.to_bytes())
    desc = manifest.to_descriptor()
    ref = Reference.parse(name)
    if tag:
        store.set_ref(str(ref), desc)
    return BuiltImage(ref, desc, manifest, tuple(diff_ids), tuple(tars))


def build_index(
    store: LocalStore, name: str = "example.com/multi:1"
) -> tuple[Reference, Descriptor]:
    amd = build_image(store, "example.com/amd:1", [{"arch": b"amd64"}], tag=False)
    arm = build_image(store, "example.com/arm:1", [{"arch": b"arm64"}], tag=False)
    index = Index(
        manifests=(
            Descriptor(
                amd.descriptor.media_type,
                amd.descriptor.digest,
                amd.descriptor.size,
                platform=Platform("linux", "amd64"),
            ),
            Descriptor(
                arm.descriptor.media_type,
                arm.descriptor.digest,
                arm.descriptor.size,
                platform=Platform("linux", "arm64", "v8"),
            ),
        )
    )
    store.put_bytes(index.to_bytes())
    desc = index.to_descriptor()
    ref = Reference.parse(name)
    store.set_ref(str(ref), desc)
    return ref, desc


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def other_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store2")


@pytest.fixture
def image(store: LocalStore) -> BuiltImage:
    return build_image(
        store,
        layers=[
            {"etc": None, "etc/os-release": b"NAME=test\n", "bin": None},
            {"hello.txt": b"hello\n", "bin/sh": "/bin/busybox"},
        ],
    )


def run(*cmd: str | os.PathLike[str], timeout: float = 60) -> str:
    """Run a peer tool; fail the test with its stderr if it fails."""
    tool = str(cmd[0])
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make setup installs it)")
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def skopeo(*args: str | os.PathLike[str]) -> str:
    return run("skopeo", "--insecure-policy", *args)


@dataclass(frozen=True)
class Containerd:
    socket: str

    def ctr(self, *args: str | os.PathLike[str]) -> str:
        return run("ctr", "-a", self.socket, "-n", "lamina-test", *args)

    def image_names(self) -> set[str]:
        out = self.ctr("images", "ls", "-q")
        return {line.strip() for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd (own root, state and socket; CRI off) for the whole session."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (make setup installs it)")
    base = tmp_path_factory.mktemp("containerd")
    sock = base / "c.sock"
    cfg = base / "config.toml"
    cfg.write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
    )
    log = (base / "containerd.log").open("wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            ok = sock.exists() and (
                subprocess.run(
                    ["ctr", "-a", str(sock), "version"], capture_output=True, check=False
                ).returncode
                == 0
            )
            if ok:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not start; see {base}/containerd.log")
            time.sleep(0.1)
        yield Containerd(str(sock))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def tar_bytes() -> Callable[[Sequence[tuple[str, bytes]]], bytes]:
    """Build an archive tar from (name, content) pairs in the order given."""

    def make(members: Sequence[tuple[str, bytes]]) -> bytes:
        out = io.BytesIO()
        w = TarWriter(out)
        dirs: set[str] = set()
        for name, data in members:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    w.add_bytes(Entry(d, EntryType.DIR, mode=0o755), b"")
            w.add_bytes(Entry(name, EntryType.FILE, mode=0o644, size=len(data)), data)
        w.close()
        return out.getvalue()

    return make
