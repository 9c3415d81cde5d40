"""Real processes on loopback for the P2P end-to-end tests: ``lamina registry serve``
as the origin (its ``/metrics`` counts the blob bytes it sends), ``lamina p2p peer``
and ``lamina p2p scheduler``, and an image with one large random layer pushed to the
origin over plain HTTP.

Imported by the test_p2p_e2e* modules (their directory is on sys.path).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from helpers.cli import LAMINA

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CHUNK = 1 << 20


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@dataclass
class Proc:
    """A lamina server process whose stderr says ``listening on URL`` once it is up."""

    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.url = ""
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*LAMINA, *self.args],
                stdout=out,
                stderr=out,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                # "listening on URL" (peer, registry), "... scheduler listening on URL"
                if "listening on http" in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
            if self.url:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[:3]} exited: {text[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.args[:3]} did not come up: {self.log.read_text()[-3000:]}")

    @property
    def hostport(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def request(
    url: str,
    method: str = "GET",
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 120,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def metrics(url: str, auth: str | None = None) -> dict[str, float]:
    status, _, body = request(f"{url}/metrics", headers={"Authorization": auth} if auth else {})
    assert status == 200, body[:500]
    return parse_metrics(body.decode())


def origin_blob_bytes(url: str, auth: str | None = None) -> float:
    """Blob body bytes the origin registry has sent (GETs of blobs, every status)."""
    # end-2 is the distribution spec's GET/HEAD blob endpoint
    return metrics(url, auth).get('lamina_registry_sent_bytes_total{route="end-2"}', 0.0)


def start_origin(tmp: Path, *extra: str) -> Proc:
    return Proc(
        ["registry", "serve", "--addr", "127.0.0.1:0", "--storage", str(tmp / "storage"), *extra],
        tmp / "origin.log",
    ).start()


def random_layer(path: Path, size: int, seed: bytes = b"lamina") -> tuple[str, int]:
    """A tar layer holding one file of ``size`` pseudo-random bytes; (digest, length)."""
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("payload.bin")
        info.size = size
        tf.addfile(info, _Random(size, seed))
    return file_digest(path), path.stat().st_size


class _Random(io.RawIOBase):
    """Deterministic, incompressible bytes without holding them (sha256 in counter mode
    is slow; a repeated 1 MiB block from urandom is enough: it is never compressed)."""

    def __init__(self, size: int, seed: bytes) -> None:
        self.left = size
        self.block = hashlib.shake_256(seed).digest(CHUNK)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = (self.block * (n // CHUNK + 1))[:n]
        self.left -= n
        return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


@dataclass
class Image:
    name: str
    tag: str
    manifest: str
    layer: str
    layer_size: int
    config: str
    blobs: dict[str, int] = field(default_factory=dict)


def push_image(
    base: str, name: str, layer_path: Path, *, tag: str = "v1", auth: str | None = None
) -> Image:
    headers = {"Authorization": auth} if auth else {}
    layer, layer_size = file_digest(layer_path), layer_path.stat().st_size
    status, _, body = request(
        f"{base}/v2/{name}/blobs/uploads/?digest={layer}",
        "POST",
        _file_chunks(layer_path),
        {**headers, "Content-Type": "application/octet-stream"},
    )
    assert status == 201, body[:500]
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
        "config": {},
    }
    config_bytes = json.dumps(config_doc).encode()
    config = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    status, _, body = request(
        f"{base}/v2/{name}/blobs/uploads/?digest={config}", "POST", config_bytes, headers
    )
    assert status == 201, body[:500]
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}],
    }
    manifest_bytes = json.dumps(manifest_doc).encode()
    status, _, body = request(
        f"{base}/v2/{name}/manifests/{tag}",
        "PUT",
        manifest_bytes,
        {**headers, "Content-Type": OCI_MANIFEST},
    )
    assert status == 201, body[:500]
    return Image(
        name,
        tag,
        f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}",
        layer,
        layer_size,
        config,
        {layer: layer_size, config: len(config_bytes)},
    )


def start_peer(tmp: Path, origin: str, *extra: str, name: str = "peer") -> Proc:
    return Proc(
        [
            "p2p",
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--upstream",
            origin,
            "--cache",
            str(tmp / name / "cache"),
            *extra,
        ],
        tmp / name / "log",
    ).start()


def lamina_env(tmp: Path) -> dict[str, str]:
    """An environment whose lamina root and config dir are private to the test."""
    env = dict(os.environ)
    env["LAMINA_CONFIG_DIR"] = str(tmp / "config")
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Swarm:
    """A scheduler (or several over one Redis) and peers, all ``lamina`` processes."""

    tmp: Path
    origin: str
    key: Path
    schedulers: list[Proc] = field(default_factory=list)
    peers: list[Proc] = field(default_factory=list)

    @classmethod
    def make(cls, tmp: Path, origin: str) -> Swarm:
        key = tmp / "swarm.key"
        key.write_bytes(hashlib.sha256(str(tmp).encode()).digest())
        return cls(tmp, origin, key)

    def start_scheduler(self, *extra: str, port: int = 0, name: str = "") -> Proc:
        name = name or f"scheduler{len(self.schedulers)}"
        proc = Proc(
            [
                "p2p", "scheduler", "--addr", f"127.0.0.1:{port}",
                "--swarm-key", str(self.key), *extra,
            ],
            self.tmp / name / "log",
        ).start()  # fmt: skip
        self.schedulers.append(proc)
        return proc

    def start_peer(self, *extra: str, scheduler: Proc | None = None) -> Proc:
        sched = scheduler or self.schedulers[0]
        name = f"peer{len(self.peers)}"
        proc = start_peer(
            self.tmp, self.origin, "--scheduler", sched.url, "--swarm-key", str(self.key),
            "--host-id", name, *extra, name=name,
        )  # fmt: skip
        self.peers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.peers, *self.schedulers]:
            proc.stop()


def pull(
    tmp: Path, peer: Proc, ref: str, name: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``lamina pull --mirror PEER REF`` with its own root, started (not waited for)."""
    return subprocess.Popen(
        [*LAMINA, "--root", str(tmp / "roots" / name), "pull", "-q", "--json", "--mirror",
         peer.url, ref],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env or lamina_env(tmp),
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def corrupt_cached(cache: Path, size: int, offset: int) -> int:
    """Flip bytes at ``offset`` of every file under ``cache`` that holds the whole blob
    (the piece file, the finished blob): the peer verified them once and now serves bad
    bytes. Returns how many files were changed."""
    changed = 0
    for path in cache.rglob("*"):
        if path.is_file() and path.stat().st_size == size:
            with open(path, "r+b") as f:
                f.seek(offset)
                old = f.read(4096)
                f.seek(offset)
                f.write(bytes(b ^ 0xFF for b in old))
            changed += 1
    return changed
