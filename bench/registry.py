"""lamina's registry server against Debian's docker-registry (distribution 2.8), on loopback.

- blob GET throughput: a 256 MiB blob read to /dev/null with curl, five reads per round,
  rounds interleaved (A B A B), the median of all reads; also with CONCURRENT (32)
  curls at once (aggregate MiB/s), and one curl at a time while STALLED (200) clients
  hold connections (upload PATCHes that send headers then nothing, blob GETs that never
  read, request heads that never end);
- manifest GET requests/second: ``wrk -c32 -d5s -t2``;
- blob HEAD requests/second: ``ab -i -k -c32 -t5`` (wrk 4.1 waits for a body after a HEAD
  answer that has a Content-Length, so it cannot measure HEAD);
- peak RSS of each server (VmHWM) after the run.

Both stores live on a private tmpfs so disk noise stays out. Ratios are lamina over
docker-registry (higher is better for lamina).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import Request, urlopen

from bench.common import CACHE, LAMINA, RESULTS, free_port, fresh, tmpfs

ROUNDS = int(os.environ.get("LAMINA_BENCH_ROUNDS", "3"))
BLOB_MIB = int(os.environ.get("LAMINA_BENCH_REGISTRY_BLOB_MIB", "256"))
WRK_SECONDS = os.environ.get("LAMINA_BENCH_WRK_SECONDS", "5")
GETS = int(os.environ.get("LAMINA_BENCH_REGISTRY_GETS", "5"))
CONCURRENT = int(os.environ.get("LAMINA_BENCH_REGISTRY_CONCURRENT", "32"))
STALLED = int(os.environ.get("LAMINA_BENCH_REGISTRY_STALLED", "200"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO = "bench/blob"


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urlopen(url + "/v2/", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _start_lamina(storage: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [*LAMINA, "registry", "serve", "--addr", f"127.0.0.1:{port}", "--storage", str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url, proc)
    return proc, url


def _start_distribution(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        # the in-memory blob descriptor cache of distribution's own example config
        f"storage:\n  cache:\n    blobdescriptor: inmemory\n"
        f"  filesystem:\n    rootdirectory: {work / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url, proc)
    return proc, url


def _push_blob(url: str, path: Path, digest: str) -> None:
    with urlopen(Request(f"{url}/v2/{REPO}/blobs/uploads/", method="POST", data=b"")) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = url + location
    sep = "&" if "?" in location else "?"
    size = path.stat().st_size
    with path.open("rb") as f:
        req = Request(
            f"{location}{sep}digest={digest}",
            method="PUT",
            data=f,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        with urlopen(req) as r:
            assert r.status == 201, r.status


def _push_manifest(url: str, body: bytes) -> None:
    req = Request(
        f"{url}/v2/{REPO}/manifests/latest",
        method="PUT",
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    with urlopen(req) as r:
        assert r.status == 201, r.status


def _make_blob(path: Path) -> str:
    hasher = hashlib.sha256()
    seed = hashlib.sha256(b"lamina-bench").digest() * (1 << 15)  # 1 MiB
    with path.open("wb") as f:
        for i in range(BLOB_MIB):
            chunk = bytes([i & 0xFF]) + seed[1:]
            f.write(chunk)
            hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def _curl_seconds(url: str) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out)


def _curl_concurrent(url: str, n: int) -> float:
    """Wall seconds for ``n`` curls reading ``url`` at once."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(["curl", "-sf", "-o", "/dev/null", url], stdout=subprocess.DEVNULL)
        for _ in range(n)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"curl {url} exited {proc.returncode}")
    return time.perf_counter() - start


def _connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def _stall(url: str, digest: str, total: int) -> list[socket.socket]:
    """``total`` stalled clients, a third of each kind; PATCHes come from distinct
    loopback addresses so no per-client cap turns them away."""
    port = int(url.rsplit(":", 1)[1])
    stalled: list[socket.socket] = []
    for i in range(total // 3):
        source = f"127.0.1.{i % 250 + 1}"
        s = _connect(port, source)
        s.sendall(f"POST /v2/{REPO}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: 0\r\n\r\n".encode())  # fmt: skip
        head = s.recv(65536).decode(errors="replace")
        m = re.search(r"(?im)^Location:\s*(\S+)", head)
        assert m is not None, head
        location = re.sub(r"^https?://[^/]+", "", m[1])
        s.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
            f"\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
            + b"x" * 1000
        )
        stalled.append(s)
    for _ in range(total // 3):
        s = _connect(port, rcvbuf=4096)
        s.sendall(f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.append(s)
    while len(stalled) < total:
        s = _connect(port)
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stalled.append(s)
    time.sleep(0.5)
    return stalled


def _wrk(url: str) -> float:
    out = subprocess.run(
        ["wrk", "-c32", f"-d{WRK_SECONDS}s", "-t2", "-H", f"Accept: {OCI_MANIFEST}", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors from {url}:\n{out}")
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    assert m is not None, out
    return float(m[1])


def _ab_head(url: str) -> float | None:
    if shutil.which("ab") is None:
        return None
    out = subprocess.run(
        ["ab", "-q", "-i", "-k", "-c32", f"-t{WRK_SECONDS}", "-n", "10000000", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    failed = re.search(r"Failed requests:\s+([0-9]+)", out)
    if failed is None or int(failed[1]) != 0:
        raise RuntimeError(f"ab saw failures from {url}:\n{out}")
    m = re.search(r"Requests per second:\s+([0-9.]+)", out)
    assert m is not None, out
    return float(m[1])


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    # the stalled clients and their servers' descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    work = tmpfs(CACHE / "registry-work", "4g")
    try:
        _run(fresh(work / "run"))
    finally:
        if os.path.ismount(work):
            subprocess.run(["umount", str(work)], check=False)


def _run(work: Path) -> None:
    blob = work / "blob.bin"
    digest = _make_blob(blob)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (work / "config.json").write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": blob.stat().st_size,
                }
            ],
        }
    ).encode()
    servers = {
        "lamina": _start_lamina(work / "lamina-store"),
        "docker-registry": _start_distribution(fresh(work / "distribution")),
    }
    try:
        for _, url in servers.values():
            _push_blob(url, blob, digest)
            _push_blob(url, work / "config.json", config_digest)
            _push_manifest(url, manifest)
        blob.unlink()  # the page cache is for the servers now
        get_s: dict[str, list[float]] = {n: [] for n in servers}
        concurrent_s: dict[str, list[float]] = {n: [] for n in servers}
        stalled_s: dict[str, list[float]] = {n: [] for n in servers}
        manifest_rps: dict[str, list[float]] = {n: [] for n in servers}
        head_rps: dict[str, list[float]] = {n: [] for n in servers}
        for r in range(ROUNDS):
            for name, (_, url) in servers.items():
                # several reads per round: one 256 MiB read is a fraction of a second
                runs = [_curl_seconds(f"{url}/v2/{REPO}/blobs/{digest}") for _ in range(GETS)]
                get_s[name].extend(runs)
                seconds = statistics.median(runs)
                blob_url = f"{url}/v2/{REPO}/blobs/{digest}"
                wall = _curl_concurrent(blob_url, CONCURRENT)
                concurrent_s[name].append(wall)
                stalled = _stall(url, digest, STALLED)
                try:
                    under = [_curl_seconds(blob_url) for _ in range(GETS)]
                finally:
                    for sock in stalled:
                        sock.close()
                stalled_s[name].extend(under)
                rps = _wrk(f"{url}/v2/{REPO}/manifests/latest")
                manifest_rps[name].append(rps)
                head = _ab_head(f"{url}/v2/{REPO}/blobs/{digest}")
                if head is not None:
                    head_rps[name].append(head)
                print(
                    f"  round {r + 1} {name:<16} blob GET {BLOB_MIB / seconds:8.0f} MiB/s  "
                    f"x{CONCURRENT} {CONCURRENT * BLOB_MIB / wall:8.0f} MiB/s  "
                    f"stalled {BLOB_MIB / statistics.median(under):8.0f} MiB/s  "
                    f"manifest GET {rps:8.0f} req/s  blob HEAD {head or 0:8.0f} req/s",
                    file=sys.stderr,
                )
        rss = {name: _hwm_mb(proc.pid) for name, (proc, _) in servers.items()}
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    _report(get_s, concurrent_s, stalled_s, manifest_rps, head_rps, rss)


def _report(
    get_s: dict[str, list[float]],
    concurrent_s: dict[str, list[float]],
    stalled_s: dict[str, list[float]],
    manifest_rps: dict[str, list[float]],
    head_rps: dict[str, list[float]],
    rss: dict[str, float],
) -> None:
    results: dict[str, dict[str, float | None]] = {}
    for name, seconds in get_s.items():
        results[name] = {
            "blob_get_mib_s": round(BLOB_MIB / statistics.median(seconds), 1),
            f"blob_get_x{CONCURRENT}_mib_s": round(
                CONCURRENT * BLOB_MIB / statistics.median(concurrent_s[name]), 1
            ),
            f"blob_get_stalled{STALLED}_mib_s": round(
                BLOB_MIB / statistics.median(stalled_s[name]), 1
            ),
            "manifest_get_rps": round(statistics.median(manifest_rps[name]), 1),
            "blob_head_rps": round(statistics.median(head_rps[name]), 1)
            if head_rps[name]
            else None,
            "peak_rss_mb": round(rss[name], 1),
        }
    ours, theirs = results["lamina"], results["docker-registry"]
    ratios = {
        key: round(float(ours[key]) / float(theirs[key]), 2)  # type: ignore[arg-type]
        for key in (
            "blob_get_mib_s",
            f"blob_get_x{CONCURRENT}_mib_s",
            f"blob_get_stalled{STALLED}_mib_s",
            "manifest_get_rps",
            "blob_head_rps",
        )
        if ours[key] and theirs[key]
    }
    doc = {
        "bench": "registry",
        "baseline": "docker-registry",
        "blob_mib": BLOB_MIB,
        "rounds": ROUNDS,
        "results": results,
        "ratio_lamina_over_docker_registry": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "registry.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(
        "registry: "
        + ", ".join(f"{k} x{v}" for k, v in ratios.items())
        + f" (lamina/docker-registry); peak RSS lamina {ours['peak_rss_mb']} MB, "
        f"docker-registry {theirs['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
