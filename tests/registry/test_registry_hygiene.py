"""Registry hygiene: /metrics behind the authenticator when auth is on, and malformed
requests logged as one line (peer and reason), never a traceback. Real HTTP and raw
sockets on loopback against ``make_app``."""

from __future__ import annotations

import base64
import json
import logging
import socket
from pathlib import Path

import pytest

from helpers.registry_server import Client, Server
from lamina.registry.authn import open_authenticator, write_htpasswd
from lamina.registry.server import make_app
from lamina.registry.storage import FilesystemStorage


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def htpasswd(tmp_path: Path) -> str:
    path = tmp_path / "htpasswd"
    write_htpasswd(str(path), {"alice": "wonderland"}, cost=4)
    return str(path)


# -- /metrics and credentials ------------------------------------------------------------


def test_metrics_need_credentials_with_basic_auth(tmp_path: Path, htpasswd: str) -> None:
    auth = open_authenticator(htpasswd=htpasswd, token_key=None, realm="lamina", service="s")
    with Server(make_app(FilesystemStorage(tmp_path / "r"), authenticator=auth)) as server:
        status, headers, body = Client(server.port).request("GET", "/metrics")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert b"lamina_registry" not in body
        wrong = Client(server.port, auth=basic("alice", "nope"))
        assert wrong.request("GET", "/metrics")[0] == 401
        alice = Client(server.port, auth=basic("alice", "wonderland"))
        assert alice.request("GET", "/v2/")[0] == 200
        status, headers, body = alice.request("GET", "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"lamina_registry_requests_total" in body


def test_metrics_need_a_registry_wide_token(tmp_path: Path, htpasswd: str) -> None:
    auth = open_authenticator(
        htpasswd=htpasswd,
        token_key=str(tmp_path / "token.key"),
        realm="http://127.0.0.1/token",
        service="lamina-test",
    )
    with Server(make_app(FilesystemStorage(tmp_path / "r"), authenticator=auth)) as server:
        status, headers, _ = Client(server.port).request("GET", "/metrics")
        assert status == 401
        assert 'scope="registry:catalog:*"' in headers["WWW-Authenticate"]

        def token(scope: str) -> str:
            status, _, body = Client(server.port, auth=basic("alice", "wonderland")).request(
                "GET", f"/token?service=lamina-test&scope={scope}"
            )
            assert status == 200, body
            return "Bearer " + json.loads(body)["token"]

        # a token for one repository is not enough
        pull = Client(server.port, auth=token("repository:a:pull"))
        assert pull.request("GET", "/metrics")[0] == 401
        admin = Client(server.port, auth=token("registry:catalog:*"))
        status, _, body = admin.request("GET", "/metrics")
        assert status == 200 and b"lamina_registry" in body


def test_metrics_stay_closed_to_anonymous_pull(tmp_path: Path, htpasswd: str) -> None:
    auth = open_authenticator(
        htpasswd=htpasswd, token_key=None, realm="lamina", service="s", anonymous_pull=True
    )
    with Server(make_app(FilesystemStorage(tmp_path / "r"), authenticator=auth)) as server:
        assert Client(server.port).request("GET", "/metrics")[0] == 401


def test_metrics_open_without_auth(tmp_path: Path) -> None:
    with Server(make_app(FilesystemStorage(tmp_path / "r"))) as server:
        assert Client(server.port).request("GET", "/metrics")[0] == 200


# -- malformed requests: one line each, no traceback ----------------------------------

GARBAGE = [
    (b"GARBAGE\r\n\r\n", "Invalid method"),
    (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", "HTTPS traffic"),
    (b"GET /v2/a/manifests/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", "url"),
    (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", "url"),
    (b"GET /v2/UPPER/tags/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "NAME_INVALID"),
    (b"GET /v2/a/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "UNSUPPORTED"),
    (b"PUT /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "UNSUPPORTED"),
    (b"BREW /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", "Invalid method"),
]


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize(("payload", "reason"), GARBAGE)
def test_malformed_request_logs_one_line_with_peer_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, payload: bytes, reason: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with Server(make_app(FilesystemStorage(tmp_path / "r"))) as server:
        caplog.clear()
        answer = _raw(server.port, payload)
        assert answer.split(b" ", 2)[1] in (b"400", b"404", b"405")
        # a well-formed request afterwards is served as ever
        assert Client(server.port).request("GET", "/v2/")[0] == 200
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "lamina", "asyncio"))]
    assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()]
    lines = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0] and reason in lines[0]
    assert "\n" not in lines[0]


def test_handler_bugs_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    # Only unparsable requests lose the traceback; anything else still logs it whole.
    from lamina.registry.server.app import _SERVER_LOG

    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        _SERVER_LOG.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    assert caplog.records[-1].exc_info is not None
