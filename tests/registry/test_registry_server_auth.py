"""The server's auth hook and TLS, with the real authenticators of lamina.registry.authn
(htpasswd basic auth, the built-in token issuer) and a trustme certificate."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from helpers.registry_server import Client, Server
from lamina.registry.authn import open_authenticator, write_htpasswd
from lamina.registry.server import make_app, tls_context
from lamina.registry.storage import FilesystemStorage


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def htpasswd(tmp_path: Path) -> str:
    path = tmp_path / "htpasswd"
    write_htpasswd(str(path), {"alice": "wonderland"}, cost=4)
    return str(path)


def test_basic_auth(tmp_path: Path, htpasswd: str) -> None:
    auth = open_authenticator(htpasswd=htpasswd, token_key=None, realm="lamina", service="s")
    with Server(make_app(FilesystemStorage(tmp_path / "r"), authenticator=auth)) as server:
        anonymous = Client(server.port)
        status, headers, body = anonymous.request("GET", "/v2/")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
        status, _, _ = anonymous.request(
            "POST", f"/v2/a/blobs/uploads/?digest={sha256(b'x')}", b"x"
        )
        assert status == 401
        wrong = Client(server.port, auth=basic("alice", "nope"))
        status, headers, _ = wrong.request("GET", "/v2/")
        assert status == 401 and "WWW-Authenticate" in headers
        alice = Client(server.port, auth=basic("alice", "wonderland"))
        assert alice.request("GET", "/v2/")[0] == 200
        digest = alice.push_blob("a", b"secret layer")
        assert alice.request("GET", f"/v2/a/blobs/{digest}")[2] == b"secret layer"
        assert anonymous.request("GET", f"/v2/a/blobs/{digest}")[0] == 401


def test_token_auth_scopes(tmp_path: Path, htpasswd: str) -> None:
    storage = FilesystemStorage(tmp_path / "r")
    # The realm must name the issuer's URL; the port is known only once listening, and
    # clients here fetch tokens directly, so any absolute URL will do.
    auth = open_authenticator(
        htpasswd=htpasswd,
        token_key=str(tmp_path / "token.key"),
        realm="http://127.0.0.1/token",
        service="lamina-test",
    )
    assert auth is not None and auth.issuer is not None
    with Server(make_app(storage, authenticator=auth)) as server:
        anonymous = Client(server.port)
        status, headers, _ = anonymous.request("GET", "/v2/a/tags/list")
        assert status == 401
        challenge = headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and 'scope="repository:a:pull"' in challenge
        # a wrong password gets no token
        status, _, _ = Client(server.port, auth=basic("alice", "nope")).request(
            "GET", "/token?service=lamina-test&scope=repository:a:pull"
        )
        assert status == 401

        def token(scope: str) -> str:
            status, _, body = Client(server.port, auth=basic("alice", "wonderland")).request(
                "GET", f"/token?service=lamina-test&scope={scope}"
            )
            assert status == 200, body
            return "Bearer " + json.loads(body)["token"]

        pusher = Client(server.port, auth=token("repository:a:pull,push"))
        digest = pusher.push_blob("a", b"layer")
        puller = Client(server.port, auth=token("repository:a:pull"))
        assert puller.request("GET", f"/v2/a/blobs/{digest}")[2] == b"layer"
        # a pull token for a can neither push to a nor pull from b
        status, _, _ = puller.request("POST", f"/v2/a/blobs/uploads/?digest={sha256(b'y')}", b"y")
        assert status == 401
        Client(server.port, auth=token("repository:b:pull,push")).push_blob("b", b"other")
        status, _, _ = puller.request("GET", f"/v2/b/blobs/{sha256(b'other')}")
        assert status == 401
        assert list(storage.iter_uploads()) == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[str, str]]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    yield str(chain), str(key)


def test_tls(tmp_path: Path, ca: trustme.CA, tls_files: tuple[str, str]) -> None:
    server_ctx = tls_context(*tls_files)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    data = bytes(range(256)) * 20_000  # 5 MB: streamed (no sendfile under TLS)
    with Server(make_app(FilesystemStorage(tmp_path / "r")), ssl_context=server_ctx) as server:
        client = Client(server.port, tls=client_ctx)
        assert client.request("GET", "/v2/")[0] == 200
        digest = client.push_blob("a", data)
        status, _, body = client.request("GET", f"/v2/a/blobs/{digest}")
        assert status == 200 and body == data
        status, _, body = client.request(
            "GET", f"/v2/a/blobs/{digest}", headers={"Range": "bytes=4000000-"}
        )
        assert status == 206 and body == data[4_000_000:]
        # a client that does not trust the CA cannot talk to it
        with pytest.raises(ssl.SSLError):
            Client(server.port, tls=ssl.create_default_context()).request("GET", "/v2/")


def test_tls_with_bad_files(tmp_path: Path) -> None:
    from lamina.errors import InvalidArgument

    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(InvalidArgument):
        tls_context(str(tmp_path / "junk.pem"), str(tmp_path / "junk.pem"))
