"""Stalled and slow clients against a real ``lamina registry serve`` (uvloop, loopback,
real sockets): 200 clients that stall in every way a client can must not slow a normal
pull or push, header tricklers and idle connections are closed on time, and the caps
answer 503/429 with Retry-After."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import LAMINA

MIB = 1 << 20
REPO = "stall/repo"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _nofile() -> None:
    # 200 stalled sockets here, and as many (and their sendfile duplicates) in the server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))


class Serve:
    def __init__(self, storage: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [*LAMINA, "registry", "serve", "--addr", "127.0.0.1:0", "--storage", str(storage),
             *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:([0-9]+)\n", line)
        assert m is not None, line + self.proc.stderr.read()
        self.port = int(m[1])
        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=20)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Started(Serve):
        def __init__(self, *extra: str) -> None:
            super().__init__(tmp_path / f"store{len(started)}", *extra)
            started.append(self)

    yield Started
    for s in started:
        s.close()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def push(port: int, data: bytes, source: str | None = None) -> str:
    digest = sha256(data)
    status, headers, _ = request(port, "POST", f"/v2/{REPO}/blobs/uploads/", b"", source=source)
    assert status == 202, status
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    status, _, body = request(
        port, "PUT", f"{location}{sep}digest={digest}", data,
        {"Content-Type": "application/octet-stream"}, source=source,
    )  # fmt: skip
    assert status == 201, (status, body)
    return digest


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``s`` (read to EOF or reset), None if it did not."""
    start = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not s.recv(1 << 16):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def _stall(port: int, big: str) -> list[socket.socket]:
    """200 stalled clients: 70 upload PATCHes that send their headers and then nothing
    (from 70 addresses, so no per-client cap refuses them), 70 GETs of a big blob that
    never read, 60 request heads that never end."""
    stalled: list[socket.socket] = []
    for i in range(70):
        source = f"127.0.1.{i + 1}"
        status, headers, _ = request(port, "POST", f"/v2/{REPO}/blobs/uploads/", b"", source=source)
        assert status == 202
        s = connect(port, source)
        s.sendall(
            f"PATCH {headers['Location']} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n\r\n".encode()
            + b"x" * 1000
        )
        stalled.append(s)
    for _ in range(70):
        s = connect(port, rcvbuf=4096)
        s.sendall(f"GET /v2/{REPO}/blobs/{big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.append(s)
    for _ in range(60):
        s = connect(port)
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stalled.append(s)
    time.sleep(1.0)  # let the server start a handler for each
    return stalled


def test_200_stalled_clients_do_not_slow_a_pull_or_a_push(serve: type[Serve]) -> None:
    server = serve("--idle-timeout", "60", "--header-timeout", "60")
    port = server.port
    blob = os.urandom(MIB)
    digest = push(port, blob)
    big = push(port, os.urandom(16 * MIB))
    stalled = _stall(port, big)
    try:
        start = time.monotonic()
        status, _, _ = request(port, "GET", "/v2/")
        assert status == 200
        status, _, got = request(port, "GET", f"/v2/{REPO}/blobs/{digest}")
        assert status == 200 and sha256(got) == digest
        pulled = time.monotonic() - start
        start = time.monotonic()
        push(port, os.urandom(MIB), source="127.0.0.2")
        pushed = time.monotonic() - start
        assert pulled < 2.0, f"pull took {pulled:.2f}s beside 200 stalled clients"
        assert pushed < 2.0, f"push took {pushed:.2f}s beside 200 stalled clients"
    finally:
        for s in stalled:
            s.close()


def test_header_trickler_and_idle_connections_are_closed(serve: type[Serve]) -> None:
    server = serve("--header-timeout", "1", "--keepalive-timeout", "1.5")
    idle = connect(server.port)
    trickler = connect(server.port)
    kept = connect(server.port)
    try:
        kept.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(1 << 16).startswith(b"HTTP/1.1 200")
        head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        start = time.monotonic()
        for byte in head:  # a byte every 0.1 s: well past the 1 s header deadline
            try:
                trickler.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the trickler was not cut off")
        assert time.monotonic() - start < 3.0
        assert closed_within(idle, 3.0) is not None, "an idle new connection stayed open"
        assert closed_within(kept, 3.0) is not None, "an idle keep-alive connection stayed open"
    finally:
        for s in (idle, trickler, kept):
            s.close()


def test_a_reader_that_stops_reading_is_dropped(serve: type[Serve]) -> None:
    server = serve("--idle-timeout", "1")
    big = push(server.port, os.urandom(16 * MIB))
    s = connect(server.port, rcvbuf=4096)
    try:
        s.sendall(f"GET /v2/{REPO}/blobs/{big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(3.0)  # read nothing for longer than the idle timeout
        received = 0
        s.settimeout(5)
        while chunk := s.recv(1 << 20):
            received += len(chunk)
        assert received < 16 * MIB, "the stalled answer was not cut off"
    except ConnectionResetError:
        pass
    finally:
        s.close()


def test_a_stalled_upload_is_dropped_and_its_slot_freed(serve: type[Serve]) -> None:
    server = serve("--idle-timeout", "1", "--max-uploads-per-client", "1")
    port = server.port
    status, headers, _ = request(port, "POST", f"/v2/{REPO}/blobs/uploads/", b"")
    assert status == 202
    s = connect(port)
    try:
        s.sendall(
            f"PATCH {headers['Location']} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {MIB}\r\n\r\n".encode()
            + b"x" * 100
        )
        s.settimeout(5)
        answer = s.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    finally:
        s.close()
    push(port, os.urandom(1000))  # the slot is free again


def test_caps_answer_503_and_429_with_retry_after(serve: type[Serve]) -> None:
    server = serve("--max-connections", "4", "--max-uploads-per-client", "2")
    port = server.port
    uploads = []
    for _ in range(3):
        status, headers, _ = request(port, "POST", f"/v2/{REPO}/blobs/uploads/", b"")
        assert status == 202
        uploads.append(headers["Location"])
    held = []
    try:
        for location in uploads[:2]:
            s = connect(port)
            s.sendall(
                f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n".encode()
            )
            held.append(s)
        time.sleep(0.5)
        status, headers, body = request(
            port, "PATCH", uploads[2], b"0123456789", {"Content-Length": "10"}
        )
        assert status == 429 and headers.get("Retry-After"), (status, headers)
        assert b"TOOMANYREQUESTS" in body
        held.extend(connect(port) for _ in range(2))  # 4 connections open: the cap
        time.sleep(0.2)
        status, headers, body = request(port, "GET", "/v2/")
        assert status == 503 and headers.get("Retry-After"), (status, headers)
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert request(port, "GET", "/v2/")[0] == 200


def test_a_bad_limit_is_refused_with_a_hint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*LAMINA, "registry", "serve", "--addr", "127.0.0.1:0", "--storage", str(tmp_path),
         "--idle-timeout", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "idle_timeout must be > 0" in proc.stderr and "Traceback" not in proc.stderr
