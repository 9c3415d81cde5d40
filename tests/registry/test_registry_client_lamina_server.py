"""lamina's client against lamina's own registry server (``lamina registry serve``), over
real HTTP on loopback: open, and with token auth from the built-in issuer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from registry_client_support import Fault, Proxy, api_push, api_unpack, free_port
from registry_client_support import lamina_cli as run

from helpers.cli import LAMINA
from helpers.images import make_random_image, tree_contents
from lamina.image.api import NoProgress
from lamina.oci.reference import Reference
from lamina.registry.client.remote import RegistryClient
from lamina.registry.client.transport import Transport
from lamina.store.local import LocalStore

USER, PASSWORD = "bob", "hunter2-pw"


def _serve(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed once the server has it
    proc = subprocess.Popen(
        [
            *LAMINA,
            "registry",
            "serve",
            "--addr",
            f"127.0.0.1:{port}",
            "--storage",
            str(tmp / "storage"),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the server writes to its own copy of the descriptor
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # 401: up, with auth
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "server.log").read_text()[-2000:]) from None
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, host = _serve(tmp_path_factory.mktemp("lamina-registry"))
    yield host
    _stop(proc)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("lamina-registry-token")
    htpasswd = tmp / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    proc, host = _serve(tmp, "--htpasswd", str(htpasswd), "--token-key", str(tmp / "token.pem"))
    yield host
    _stop(proc)


def test_round_trip_incremental_and_mount(tmp_path: Path, server: str) -> None:
    src = tmp_path / "src"
    store = LocalStore(src)
    image = make_random_image(store, "docker.io/library/r:1", seed=51, layers=3)
    make_random_image(store, "docker.io/library/r:2", seed=51, layers=4)
    first = json.loads(run(src, "push", "r:1", f"{server}/round/trip:1", "--json").stdout)
    assert first["uploaded"] == 4
    second = api_push(src, "r:2", f"{server}/round/trip:2")
    assert (second.existed, second.uploaded) == (3, 2)
    third = json.loads(run(src, "push", "r:1", f"{server}/elsewhere/x:1", "--json").stdout)
    assert (third["mounted"], third["uploaded"]) == (4, 0)

    fresh = tmp_path / "fresh"
    run(fresh, "pull", f"{server}/round/trip:1")
    by_digest = f"{server}/elsewhere/x@{first['digest']}"
    out = json.loads(run(fresh, "pull", by_digest, "--json").stdout)
    assert out["fetched"] == 0  # every blob is in the store already
    api_unpack(fresh, by_digest, tmp_path / "tree")
    assert tree_contents(str(tmp_path / "tree")) == image.expected


def test_chunked_upload_resumes_on_lamina_server(tmp_path: Path, server: str) -> None:
    store = LocalStore(tmp_path / "src")
    image = make_random_image(
        store,
        "docker.io/library/chunks:1",
        seed=52,
        layers=1,
        files_per_layer=120,
        max_file_size=100_000,
        compression="",
    )
    layer = image.layers[0].descriptor
    chunk = 1 << 20
    assert layer.size > 3 * chunk
    proxy = Proxy(server).start()
    try:
        proxy.faults.append(Fault("PATCH", "/blobs/uploads/", after=chunk // 2, skip=2))
        dest = Reference.parse(f"{proxy.host}/chunks/app:1")

        async def push() -> str:
            async with RegistryClient(Transport(lambda r: None), chunk_size=chunk) as client:
                return await client.push_blob(dest, layer, store, NoProgress())

        assert asyncio.run(push()) == "uploaded"
        assert proxy.cuts == 1
        statuses = [s for m, p, s in proxy.requests if m == "PATCH"]
        assert statuses[:3] == [202, 202, -1]
        assert len(statuses) == 2 + 1 + (-(-layer.size // chunk) - 2)
    finally:
        proxy.stop()
    fresh = LocalStore(tmp_path / "fresh")

    async def fetch() -> None:
        ref = Reference.parse(f"{server}/chunks/app:1")
        async with RegistryClient(Transport(lambda r: None)) as client:
            await client.fetch_blob(ref, layer, fresh, NoProgress())

    asyncio.run(fetch())
    assert fresh.has(layer.digest)


def test_token_auth_with_the_built_in_issuer(tmp_path: Path, token_server: str) -> None:
    src = tmp_path / "src"
    make_random_image(LocalStore(src), "docker.io/library/t:1", seed=53, layers=1)
    authfile = tmp_path / "auth.json"
    dest = f"{token_server}/team/app:1"
    out = run(src, "push", "t:1", dest, authfile=authfile, check=False)
    assert out.returncode != 0 and f"lamina login {token_server}" in out.stderr
    out = run(
        tmp_path / "r",
        "login",
        token_server,
        "-u",
        USER,
        "-p",
        "wrong",
        authfile=authfile,
        check=False,
    )
    assert out.returncode != 0 and "refused" in out.stderr
    assert not authfile.exists()
    run(tmp_path / "r", "login", token_server, "-u", USER, "-p", PASSWORD, authfile=authfile)
    run(src, "push", "t:1", dest, authfile=authfile)
    run(tmp_path / "fresh", "pull", dest, authfile=authfile)
    run(tmp_path / "r", "logout", token_server, authfile=authfile)
    out = run(tmp_path / "fresh2", "pull", dest, authfile=authfile, check=False)
    assert out.returncode != 0


def test_tls_registry_on_loopback_is_reached_over_https(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import trustme

    tmp = tmp_path_factory.mktemp("lamina-registry-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    proc, host = _serve_tls(tmp)
    try:
        # a loopback registry is insecure (docker's rule): TLS without verification
        store = tmp_path / "src"
        make_random_image(LocalStore(store), "docker.io/library/tls:1", seed=54, layers=1)
        pushed = api_push(store, "tls:1", f"{host}/tls/app:1")
        assert pushed.uploaded == 2
        out = json.loads(run(tmp_path / "fresh", "pull", f"{host}/tls/app:1", "--json").stdout)
        assert out["digest"] == str(pushed.descriptor.digest)
    finally:
        _stop(proc)


def _serve_tls(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import ssl

    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed once the server has it
    proc = subprocess.Popen(
        [
            *LAMINA,
            "registry",
            "serve",
            "--addr",
            f"127.0.0.1:{port}",
            "--storage",
            str(tmp / "storage"),
            "--tls-cert",
            str(tmp / "cert.pem"),
            "--tls-key",
            str(tmp / "key.pem"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the server writes to its own copy of the descriptor
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", timeout=1, context=context)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "server.log").read_text()[-2000:]) from None
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"
