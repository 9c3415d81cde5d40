"""Registry auth from the client's side: docker-registry with htpasswd (Basic), and with
token auth (Bearer) backed by a small token server the test runs; login, logout, the
credentials file."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from registry_client_support import DockerRegistry, free_port, lamina_cli, start_docker_registry

from helpers.images import make_random_image
from lamina.store.local import LocalStore

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "s3cret-pw"


def run(
    root: Path, authfile: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return lamina_cli(root, *args, authfile=authfile, input=input, check=False)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    tmp = tmp_path_factory.mktemp("htpasswd-registry")
    htpasswd = tmp / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    reg = start_docker_registry(tmp / "reg", htpasswd=htpasswd)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth-src") / "root"
    make_random_image(LocalStore(root), "docker.io/library/secret:1", seed=21, layers=2)
    return root


def test_anonymous_push_is_refused_with_a_hint(
    tmp_path: Path, basic_registry: DockerRegistry, image_root: Path
) -> None:
    out = run(
        image_root, tmp_path / "auth.json", "push", "secret:1", f"{basic_registry.host}/a/b:1"
    )
    assert out.returncode != 0
    assert "requires authentication" in out.stderr
    assert f"lamina login {basic_registry.host}" in out.stderr


def test_login_with_wrong_password_fails_and_saves_nothing(
    tmp_path: Path, basic_registry: DockerRegistry
) -> None:
    authfile = tmp_path / "auth.json"
    out = run(tmp_path / "r", authfile, "login", basic_registry.host, "-u", USER, "-p", "wrong")
    assert out.returncode != 0
    assert "refused the credentials" in out.stderr
    assert not authfile.exists()


def test_login_push_pull_logout(
    tmp_path: Path, basic_registry: DockerRegistry, image_root: Path
) -> None:
    authfile = tmp_path / "cfg" / "auth.json"
    host = basic_registry.host
    out = run(
        tmp_path / "r",
        authfile,
        "login",
        host,
        "-u",
        USER,
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert out.returncode == 0, out.stderr
    assert "Login Succeeded" in out.stdout
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    saved = json.loads(authfile.read_text())["auths"][host]["auth"]
    assert base64.b64decode(saved).decode() == f"{USER}:{PASSWORD}"

    dest = f"{host}/private/app:1"
    out = run(image_root, authfile, "push", "secret:1", dest)
    assert out.returncode == 0, out.stderr
    out = run(tmp_path / "fresh", authfile, "pull", dest)
    assert out.returncode == 0, out.stderr

    out = run(tmp_path / "r", authfile, "logout", host)
    assert out.returncode == 0, out.stderr
    assert host not in json.loads(authfile.read_text())["auths"]
    out = run(tmp_path / "fresh2", authfile, "pull", dest)
    assert out.returncode != 0 and "requires authentication" in out.stderr
    out = run(tmp_path / "r", authfile, "logout", host)
    assert out.returncode == 2 and "not logged in" in out.stderr


# -- Bearer: docker-registry's token auth, with a token server run by the test ----------


class TokenServer:
    """Issues RS256 JWTs the way docker-registry's token auth wants them (x5c header,
    issuer, audience = service, ``access`` claims), for one user, for any scope asked."""

    def __init__(self, tmp: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina-test-issuer")])
        now = time.time()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_dt(now - 3600))
            .not_valid_after(_dt(now + 86400))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = tmp / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.requests: list[dict[str, object]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def _token(self, request: web.Request) -> web.Response:
        scopes = request.query.getall("scope", [])
        auth = request.headers.get("Authorization", "")
        self.requests.append({"scopes": scopes, "basic": bool(auth)})
        if auth:
            raw = base64.b64decode(auth.split(" ", 1)[1]).decode()
            if raw != f"{USER}:{PASSWORD}":
                return web.Response(status=401, text="bad credentials")
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = actions.split(",") if auth else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        token = jwt.encode(
            {
                "iss": "lamina-test-issuer",
                "sub": USER if auth else "",
                "aud": "lamina-test",
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": uuid.uuid4().hex,
                "access": access,
            },
            self.key,
            algorithm="RS256",
            headers={"x5c": [base64.b64encode(der).decode()]},
        )
        return web.json_response({"token": token, "expires_in": 300})

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/token", self._token)
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()

        def loop() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        threading.Thread(target=loop, daemon=True).start()
        ready.wait(10)


def _dt(t: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC)


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DockerRegistry, TokenServer]]:
    tmp = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(tmp)
    server.start()
    auth = (
        "auth:\n  token:\n"
        f"    realm: {server.realm}\n    service: lamina-test\n"
        f"    issuer: lamina-test-issuer\n    rootcertbundle: {server.bundle}\n"
    )
    reg = start_docker_registry(tmp / "reg", extra_config=auth)
    yield reg, server
    reg.stop()


def test_bearer_token_flow(
    tmp_path: Path, token_registry: tuple[DockerRegistry, TokenServer], image_root: Path
) -> None:
    reg, server = token_registry
    authfile = tmp_path / "auth.json"
    dest = f"{reg.host}/tok/app:1"
    # anonymous: the token server grants pull only, so the push is denied
    out = run(image_root, authfile, "push", "secret:1", dest)
    assert out.returncode != 0
    assert "lamina login" in out.stderr

    out = run(tmp_path / "r", authfile, "login", reg.host, "-u", USER, "-p", "nope")
    assert out.returncode != 0 and "refused" in out.stderr
    out = run(tmp_path / "r", authfile, "login", reg.host, "-u", USER, "-p", PASSWORD)
    assert out.returncode == 0, out.stderr

    server.requests.clear()
    out = run(image_root, authfile, "push", "secret:1", dest, "--json")
    assert out.returncode == 0, out.stderr
    # one token for the push scope, asked once, however many blobs went up in parallel
    push_scope = ["repository:tok/app:pull,push"]
    assert [r["scopes"] for r in server.requests] == [push_scope]
    assert all(r["basic"] for r in server.requests)

    server.requests.clear()
    out = run(tmp_path / "fresh", authfile, "pull", dest)
    assert out.returncode == 0, out.stderr
    assert [r["scopes"] for r in server.requests] == [["repository:tok/app:pull"]]
