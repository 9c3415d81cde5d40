"""Test support for the registry client: Debian's docker-registry (distribution 2.8)
started on a free loopback port, and a counting, fault-injecting HTTP proxy in front of it.

Imported by the test_registry_client_* modules (their directory is on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from helpers.cli import LAMINA

if TYPE_CHECKING:
    from lamina.image.transfer.pull import PullResult
    from lamina.image.transfer.push import PushResult

SESSION = web.AppKey("session", aiohttp.ClientSession)
DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DockerRegistry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def blob_data_path(self, digest: str) -> Path:
        algorithm, hexpart = digest.split(":")
        return (
            self.storage / "docker/registry/v2/blobs" / algorithm / hexpart[:2] / hexpart / "data"
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # 401 with auth on: it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not come up: {log.read_text()[-2000:]}")


def start_docker_registry(
    tmp: Path, htpasswd: Path | None = None, extra_config: str = ""
) -> DockerRegistry:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = tmp / "storage"
    storage.mkdir(exist_ok=True)
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {htpasswd}\n"
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: lamina-test-secret\n" + auth + extra_config
    )
    log = tmp / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [DOCKER_REGISTRY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    _wait_up(f"http://127.0.0.1:{port}/v2/", proc, log)
    return DockerRegistry(f"127.0.0.1:{port}", storage, log, proc)


@dataclass
class Fault:
    """Cut the connection of the next ``count`` requests matching ``method`` and a path
    containing ``path_part``, after ``after`` bytes of the request body (PATCH/PUT) or
    of the response body (GET)."""

    method: str
    path_part: str
    after: int
    count: int = 1
    skip: int = 0  # let this many matching requests through first
    status: int | None = None  # answer this status instead of cutting (nothing forwarded)


@dataclass
class Proxy:
    """A plain HTTP reverse proxy on loopback, in its own thread and event loop. It
    keeps the client's Host header, so the registry's Location URLs point back at it."""

    upstream: str
    host: str = ""
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path?query, status
    faults: list[Fault] = field(default_factory=list)
    cuts: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.method == method and fault.path_part in path:
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.count -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = f"http://{self.upstream}{request.rel_url}"
        path = str(request.rel_url)
        fault = self._fault_for(request.method, path)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding")
        }
        if fault is not None and fault.status is not None:
            await request.read()
            self.requests.append((request.method, path, fault.status))
            return web.Response(status=fault.status, headers={"Retry-After": "0"})
        if fault is not None and request.method in ("PATCH", "PUT", "POST"):
            # read part of the body, then drop the client: nothing reaches the registry
            got = 0
            while got < fault.after:
                chunk = await request.content.read(65536)
                if not chunk:
                    break
                got += len(chunk)
            self.cuts += 1
            self.requests.append((request.method, path, -1))
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        body = request.content.iter_any() if request.can_read_body else None
        session = request.app[SESSION]
        async with session.request(
            request.method, target, headers=headers, data=body, allow_redirects=False
        ) as up:
            self.requests.append((request.method, path, up.status))
            out_headers = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("connection", "keep-alive", "transfer-encoding")
            }
            resp = web.StreamResponse(status=up.status, headers=out_headers)
            await resp.prepare(request)
            sent = 0
            async for chunk in up.content.iter_any():
                if fault is not None and sent + len(chunk) > fault.after:
                    await resp.write(chunk[: fault.after - sent])
                    self.cuts += 1
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
            return resp

    def start(self) -> Proxy:
        ready = threading.Event()
        port = free_port()
        self.host = f"127.0.0.1:{port}"

        async def main() -> None:
            app = web.Application(client_max_size=0)
            app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", port).start()
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.app[SESSION].close()
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if not self._loop.is_running():  # its thread is done with it
            self._loop.close()

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.cuts = 0

    def count(self, method: str, part: str, status: int | None = None) -> int:
        return sum(
            1
            for m, p, s in self.requests
            if m == method and part in p and (status is None or s == status)
        )

    def blob_uploads(self) -> int:
        """Finished uploads: PUT .../blobs/uploads/...?digest= answered 201."""
        return sum(
            1
            for m, p, s in self.requests
            if m == "PUT" and "/blobs/uploads/" in p and "digest=" in p and s == 201
        )


@contextlib.contextmanager
def running_registry(tmp: Path, htpasswd: Path | None = None) -> Iterator[DockerRegistry]:
    reg = start_docker_registry(tmp, htpasswd)
    try:
        yield reg
    finally:
        reg.stop()


def env_without_auth(tmp: Path) -> dict[str, str]:
    """An environment whose credentials file is private to the test."""
    return {**os.environ, "REGISTRY_AUTH_FILE": str(tmp / "auth.json")}


def api_push(root: Path, name: str, dest: str) -> PushResult:
    """What ``lamina push`` does, in this process (no interpreter start per call)."""
    from lamina.image import images as img
    from lamina.image.api import NoProgress
    from lamina.image.transfer.push import plan_push, push_image
    from lamina.oci.reference import Reference
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport
    from lamina.store.local import LocalStore

    store = LocalStore(root)
    image = img.resolve(store, name)
    plan = plan_push(store, image.descriptor, image.manifest_descriptor)

    async def go() -> PushResult:
        async with RegistryClient(Transport(lambda r: None)) as client:
            return await push_image(
                client, store, plan, Reference.parse(dest), progress=NoProgress()
            )

    return asyncio.run(go())


def api_pull(root: Path, ref: str) -> PullResult:
    """What ``lamina pull`` does, in this process."""
    from lamina.image.api import NoProgress
    from lamina.image.transfer.pull import pull_image
    from lamina.oci.reference import Reference
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport
    from lamina.store.local import LocalStore

    store = LocalStore(root)

    async def go() -> PullResult:
        async with RegistryClient(Transport(lambda r: None)) as client:
            return await pull_image(client, store, Reference.parse(ref), progress=NoProgress())

    return asyncio.run(go())


def api_unpack(root: Path, ref: str, dest: Path) -> None:
    """What ``lamina unpack`` does, in this process."""
    from lamina.image import images as img
    from lamina.image.unpack import unpack_image
    from lamina.store.local import LocalStore

    store = LocalStore(root)
    unpack_image(store, img.resolve(store, ref), str(dest))


def lamina_cli(
    root: Path,
    *args: str,
    authfile: Path | None = None,
    input: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """The real `lamina` with ``--root root``; credentials in ``authfile`` (default: next
    to the root). ``check`` fails the test with lamina's stderr on a non-zero exit."""
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(authfile or root.parent / "auth.json")}
    proc = subprocess.run(
        [*LAMINA, "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=300,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"lamina {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def outward_ipv4() -> str | None:
    """This host's address on a route out (a UDP connect sends nothing)."""
    for target in ("10.255.255.255", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((target, 9))
            except OSError:
                continue
            address = str(s.getsockname()[0])
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None
