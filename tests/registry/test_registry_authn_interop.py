"""lamina's auth files and tokens against the Go reference: Debian's docker-registry
(distribution 2.8.2) reads the htpasswd files lamina writes, and verifies the JWTs
lamina's issuer signs; skopeo pushes through both."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers.archives import Containerd, containerd  # noqa: F401 (a fixture)
from helpers.cli import LAMINA
from lamina.registry.authn import (
    BuiltinTokenIssuer,
    TokenAuthenticator,
    open_authenticator,
    write_htpasswd,
)
from lamina.registry.challenges import basic_authorization, parse_challenge
from lamina.registry.errors import RegistryError

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs docker-registry"),
]

SERVICE = "registry.test"


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


@pytest.fixture(scope="module")
def oci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer image in an OCI layout, tagged ``v1`` (made by hand: small, fast)."""
    layout = tmp_path_factory.mktemp("layout")
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        body = b"hello from lamina auth tests\n" * 100
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(body), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(body))
    layer = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    config = _blob(
        layout,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()],
                },
            }
        ).encode(),
    )
    manifest = _blob(
        layout,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
            }
        ).encode(),
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def skopeo_copy(layout: Path, dest: str, *creds: str) -> subprocess.CompletedProcess[str]:
    cmd = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"]
    cmd += ["--dest-creds", creds[0]] if creds else ["--dest-no-creds"]
    cmd += [f"oci:{layout}:v1", dest]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def http_get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        url, headers={"Authorization": authorization} if authorization else {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.fixture
def docker_registry(tmp_path: Path) -> Iterator[object]:
    """``start(auth_config) -> base URL``: a docker-registry on a free loopback port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(auth: dict[str, object]) -> str:
        n = len(procs)
        cfg = tmp_path / f"registry{n}.yml"
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(tmp_path / f"data{n}")}},
            "http": {"addr": "127.0.0.1:0", "secret": "lamina-tests"},
            "auth": auth,
        }
        cfg.write_text(json.dumps(config))  # JSON is YAML
        log = tmp_path / f"registry{n}.log"
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=out, stderr=out)
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            if m:
                return f"http://127.0.0.1:{m[1]}"
            if procs[-1].poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"docker-registry did not start:\n{log.read_text(errors='replace')}")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_docker_registry_reads_our_htpasswd(
    tmp_path: Path, docker_registry: object, oci_layout: Path
) -> None:
    path = tmp_path / "htpasswd"
    write_htpasswd(str(path), {"alice": "wonder:land ∂", "bob": "builder"}, cost=5)
    assert callable(docker_registry)
    base = docker_registry({"htpasswd": {"realm": "basic-realm", "path": str(path)}})
    status, headers = http_get(f"{base}/v2/")
    assert status == 401 and headers["Www-Authenticate"].startswith("Basic ")
    assert http_get(f"{base}/v2/", basic_authorization("alice", "wonder:land ∂"))[0] == 200
    assert http_get(f"{base}/v2/", basic_authorization("bob", "builder"))[0] == 200
    assert http_get(f"{base}/v2/", basic_authorization("alice", "wonder:land"))[0] == 401
    assert http_get(f"{base}/v2/", basic_authorization("carol", "builder"))[0] == 401
    dest = f"docker://{base.removeprefix('http://')}/team/app:v1"
    ok = skopeo_copy(oci_layout, dest, "bob:builder")
    assert ok.returncode == 0, ok.stderr
    bad = skopeo_copy(oci_layout, dest, "bob:wrong")
    assert bad.returncode != 0 and "unauthorized" in bad.stderr.lower(), bad.stderr


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Serves one BuiltinTokenIssuer at its path (test glue: what lamina's server does
    for /token, in a stdlib server so this test does not need lamina's)."""

    issuer: BuiltinTokenIssuer
    requests: list[str]

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.requests.append(self.path)
        query = parse_qs(url.query)
        if url.path != self.issuer.path:
            self.send_error(404)
            return
        try:
            body = self.issuer.issue(
                self.headers.get("Authorization"),
                query["service"][0] if "service" in query else None,
                tuple(query.get("scope", [])),
            )
            status, headers, data = 200, {}, json.dumps(body).encode()
        except RegistryError as exc:
            status, headers = exc.status, exc.headers
            data = json.dumps({"errors": [exc.to_json()]}).encode()
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def token_endpoint(tmp_path: Path) -> Iterator[tuple[TokenAuthenticator, list[str]]]:
    """lamina's issuer on a free loopback port; users alice and bob."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(str(htpasswd), {"alice": "wonderland", "bob": "builder"}, cost=4)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    auth = open_authenticator(
        htpasswd=str(htpasswd),
        token_key=str(tmp_path / "token.pem"),
        realm=realm,
        service=SERVICE,
        issuer="lamina-issuer",
    )
    assert isinstance(auth, TokenAuthenticator)
    requests: list[str] = []
    server.RequestHandlerClass = type(
        "Endpoint", (_TokenEndpoint,), {"issuer": auth.token_issuer, "requests": requests}
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield auth, requests
    server.shutdown()
    server.server_close()


def test_docker_registry_verifies_our_tokens(
    tmp_path: Path,
    docker_registry: object,
    token_endpoint: tuple[TokenAuthenticator, list[str]],
    oci_layout: Path,
) -> None:
    auth, requests = token_endpoint
    issuer = auth.token_issuer
    bundle = tmp_path / "issuer.crt"
    bundle.write_bytes(issuer.codec.key.certificate_pem())
    assert callable(docker_registry)
    base = docker_registry(
        {
            "token": {
                "realm": issuer.realm,
                "service": SERVICE,
                "issuer": "lamina-issuer",
                "rootcertbundle": str(bundle),
            }
        }
    )
    # skopeo follows docker-registry's challenge to lamina's issuer and back.
    dest = f"docker://{base.removeprefix('http://')}/team/app:v1"
    ok = skopeo_copy(oci_layout, dest, "alice:wonderland")
    assert ok.returncode == 0, ok.stderr
    assert any(
        "scope=repository%3Ateam%2Fapp%3A" in r or "scope=repository:team/app:" in r
        for r in requests
    ), requests
    bad = skopeo_copy(oci_layout, dest, "alice:wrong")
    assert bad.returncode != 0, bad.stderr

    # A pull token for team/app: docker-registry lets it read team/app and nothing else.
    token = "Bearer " + str(
        issuer.issue(basic_authorization("bob", "builder"), SERVICE, ("repository:team/app:pull",))[
            "token"
        ]
    )
    assert http_get(f"{base}/v2/team/app/tags/list", token)[0] == 200
    status, headers = http_get(f"{base}/v2/other/tags/list", token)
    challenge = parse_challenge(headers["Www-Authenticate"])
    assert status == 401 and challenge.params.get("error") == "insufficient_scope"
    assert challenge.realm == issuer.realm and challenge.service == SERVICE
    # Expired: docker-registry refuses it too.
    old, _, _ = issuer.codec.sign(
        "bob", auth.authenticate(token, ()).granted, now=time.time() - 7200
    )
    status, headers = http_get(f"{base}/v2/team/app/tags/list", "Bearer " + old)
    assert status == 401 and 'error="invalid_token"' in headers["Www-Authenticate"]
    assert os.stat(tmp_path / "token.pem").st_mode & 0o777 == 0o600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lamina_registry(tmp_path: Path) -> Iterator[object]:
    """``start(*serve_args) -> host:port``: ``lamina registry serve`` as a process."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        n = len(procs)
        # The realm of token auth names the port, so the port is picked up front.
        addr = f"127.0.0.1:{_free_port()}"
        log = tmp_path / f"lamina-registry{n}.log"
        cmd = [*LAMINA, "--root", str(tmp_path / "root"), "registry", "serve"]
        cmd += ["--addr", addr, "--storage", str(tmp_path / f"storage{n}"), *args]
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=out))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "listening on" in log.read_text(errors="replace"):
                return addr
            if procs[-1].poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"lamina registry serve did not start:\n{log.read_text(errors='replace')}")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _skopeo_inspect(ref: str, creds: str | None) -> subprocess.CompletedProcess[str]:
    cmd = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    cmd += ["--creds", creds] if creds else ["--no-creds"]
    return subprocess.run([*cmd, ref], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_skopeo_through_lamina_auth(
    tmp_path: Path, lamina_registry: object, oci_layout: Path, mode: str
) -> None:
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(str(htpasswd), {"alice": "wonderland"}, cost=4)
    args = ["--htpasswd", str(htpasswd)]
    if mode == "token":
        args += ["--token-key", str(tmp_path / "token.pem")]
    assert callable(lamina_registry)
    addr = lamina_registry(*args)
    ref = f"docker://{addr}/team/app:v1"
    bad = skopeo_copy(oci_layout, ref, "alice:wrong")
    assert bad.returncode != 0 and "unauthorized" in bad.stderr.lower(), bad.stderr
    anon = skopeo_copy(oci_layout, ref)  # anonymous push: refused
    assert anon.returncode != 0 and "unauthorized" in anon.stderr.lower(), anon.stderr
    ok = skopeo_copy(oci_layout, ref, "alice:wonderland")
    assert ok.returncode == 0, ok.stderr
    # Pull it back: the manifest skopeo reads is the one in the layout.
    index = json.loads((oci_layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    want = (oci_layout / "blobs" / "sha256" / digest).read_text()
    got = _skopeo_inspect(ref, "alice:wonderland")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == json.loads(want)
    assert _skopeo_inspect(ref, None).returncode != 0
    assert _skopeo_inspect(ref, "alice:wrong").returncode != 0
    if mode == "token":
        assert (tmp_path / "token.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.root
def test_ctr_pulls_through_token_auth(
    tmp_path: Path,
    lamina_registry: object,
    oci_layout: Path,
    containerd: Containerd,  # noqa: F811
) -> None:
    # containerd asks for tokens its own way (an OAuth2 POST first, then GET).
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(str(htpasswd), {"alice": "wonderland"}, cost=4)
    assert callable(lamina_registry)
    addr = lamina_registry("--htpasswd", str(htpasswd), "--token-key", str(tmp_path / "token.pem"))
    ok = skopeo_copy(oci_layout, f"docker://{addr}/team/app:v1", "alice:wonderland")
    assert ok.returncode == 0, ok.stderr
    ref = f"{addr}/team/app:v1"
    containerd.ctr("images", "pull", "--plain-http", "--user", "alice:wonderland", ref)
    assert ref in containerd.image_names()
    ctr = ["ctr", "-a", containerd.socket, "-n", "lamina-test", "images", "pull"]
    wrong = subprocess.run(
        [*ctr, "--plain-http", "--user", "alice:wrong", f"{addr}/team/app:v1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode != 0 and "401" in wrong.stderr + wrong.stdout, wrong.stderr
