"""``ADD <url>`` over lamina's shared HTTP stack (lamina.http): redirects, retries of a
flaky server, the size cap, bytes kept as sent, clear errors; against a real HTTP
server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from lamina.builder.files.addurl import fetch_url
from lamina.errors import LaminaError, LimitExceeded, NotFound

PAYLOAD = b"payload of an ADD\n" * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: ClassVar[dict[str, int]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _hit(self) -> int:
        with self.lock:
            self.hits[self.path] = self.hits.get(self.path, 0) + 1
            return self.hits[self.path]

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        hit = self._hit()
        if self.path == "/redirect":
            self._send(302, b"", {"Location": "/files/final.bin"})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == "/to-file":
            self._send(302, b"", {"Location": "file:///etc/passwd"})
        elif self.path.startswith("/flaky"):
            if hit < 3:
                self._send(503, b"busy", {"Retry-After": "0"})
            else:
                self._send(200, PAYLOAD)
        elif self.path == "/down":
            self._send(503, b"down")
        elif self.path == "/gone":
            self._send(410, b"")
        elif self.path == "/forbidden":
            self._send(403, b"no")
        elif self.path == "/encoded":
            # a server that compresses only when asked (RFC 9110 section 12.5.3)
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                self._send(200, gzip.compress(PAYLOAD), {"Content-Encoding": "gzip"})
            else:
                self._send(200, PAYLOAD)
        elif self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:100])
            self.close_connection = True
        else:
            self._send(200, PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


SUM = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


def test_a_redirect_is_followed_and_the_name_is_the_urls(server: str, tmp_path: Path) -> None:
    path = fetch_url(f"{server}/redirect", str(tmp_path), checksum=SUM)
    assert path == str(tmp_path / "redirect")  # the URL as written (Docker's rule)
    assert Path(path).read_bytes() == PAYLOAD


def test_a_flaky_server_is_tried_again(server: str, tmp_path: Path) -> None:
    path = fetch_url(f"{server}/flaky-1", str(tmp_path), checksum=SUM)
    assert Path(path).read_bytes() == PAYLOAD
    assert _Handler.hits["/flaky-1"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flaky-1"]


def test_a_server_that_stays_down_fails_clearly(server: str, tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match=r"ADD .*/down: HTTP 503"):
        fetch_url(f"{server}/down", str(tmp_path))
    with pytest.raises(NotFound, match="HTTP 410"):
        fetch_url(f"{server}/gone", str(tmp_path))
    with pytest.raises(LaminaError, match="HTTP 403 Forbidden"):
        fetch_url(f"{server}/forbidden", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_bytes_are_kept_as_sent(server: str, tmp_path: Path) -> None:
    path = fetch_url(f"{server}/encoded", str(tmp_path), checksum=SUM)
    assert Path(path).read_bytes() == PAYLOAD


def test_the_size_cap_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(LimitExceeded, match="over 1000 bytes"):
        fetch_url(f"{server}/big", str(tmp_path), max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_body_cut_short_fails_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match=r"ADD .*/cut: download failed"):
        fetch_url(f"{server}/cut", str(tmp_path))
    assert _Handler.hits["/cut"] == 4  # the first try and three more
    assert list(tmp_path.iterdir()) == []


def test_bad_redirects_and_unreachable_hosts(server: str, tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="cannot download"):
        fetch_url(f"{server}/loop", str(tmp_path))
    with pytest.raises(LaminaError, match="cannot download"):
        fetch_url(f"{server}/to-file", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: the connection is refused
        with pytest.raises(LaminaError, match="cannot download") as caught:
            fetch_url(f"http://127.0.0.1:{port}/x", str(tmp_path))
    assert caught.value.hint == "check the URL and the network"
    assert list(tmp_path.iterdir()) == []
