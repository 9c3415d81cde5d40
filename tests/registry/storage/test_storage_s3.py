"""What only the S3 driver promises, on a real SeaweedFS: SigV4 that the server checks,
uploads in pieces across S3's 5 MiB part minimum (also when the chunks of one upload
reach different processes), bounded memory for big blobs, and retries through dropped
connections and 5xx answers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.seaweed import Seaweed
from lamina.errors import Conflict, InvalidArgument, LaminaError
from lamina.oci.digest import Digest
from lamina.registry.storage import open_storage
from lamina.registry.storage.s3.client import Credentials, S3Client, S3Error
from lamina.registry.storage.s3.driver import MIN_PART, SEGMENT, S3Storage
from lamina.registry.storage.s3.upload_session import UploadState

MIB = 1 << 20


def _s3(location: str) -> S3Storage:
    s = open_storage(location)
    assert isinstance(s, S3Storage)
    return s


def _digest(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def _read(s: S3Storage, d: Digest, offset: int = 0, length: int | None = None) -> bytes:
    with s.open_blob(d, offset, length) as r:
        out = bytearray()
        while block := r.read(MIB):
            out += block
    return bytes(out)


def _state(s: S3Storage, uuid: str) -> dict[str, object]:
    data = s.client.get_bytes(f"{s.prefix}_uploads/{uuid}/state", MIB)
    obj: dict[str, object] = json.loads(data)
    return obj


# -- signing, keys and errors ---------------------------------------------------------


def test_keys_needing_escapes_round_trip(seaweed: Seaweed) -> None:
    # Query values with '/', '=' and spaces, keys with '+', '~' and '%': the canonical
    # request must escape them exactly as the server does, or it answers 403.
    client = S3Client(seaweed.endpoint, seaweed.bucket, Credentials("x", "y"))
    s = _s3(seaweed.location())
    odd = f"{s.prefix}odd/a+b~c %d=e"
    s.client.put(odd, b"v")
    assert s.client.get_bytes(odd, 10) == b"v"
    listed = [i for i in s.client.list_objects(f"{s.prefix}odd/a+b~c %d") if not isinstance(i, str)]
    assert [i.key for i in listed] == [odd]
    del client


@pytest.mark.parametrize(
    ("access", "secret", "code"),
    [
        ("LAMINATESTKEY", "not-the-secret", "SignatureDoesNotMatch"),
        ("NOSUCHKEY", "whatever", "InvalidAccessKeyId"),
    ],
)
def test_wrong_credentials_are_refused(
    seaweed: Seaweed, access: str, secret: str, code: str
) -> None:
    location = seaweed.location(access_key=access, secret_key=secret)
    with pytest.raises(S3Error) as info:
        open_storage(location)  # checked at open: a server fails at startup, clearly
    assert info.value.status == 403
    assert info.value.code == code
    assert info.value.hint is not None and "AWS_SECRET_ACCESS_KEY" in info.value.hint
    bad = S3Storage(S3Client(seaweed.endpoint, seaweed.bucket, Credentials(access, secret)), "p")
    with pytest.raises(S3Error) as listing:
        bad.list_repositories()
    assert listing.value.code == code
    with pytest.raises(LaminaError) as head_info:  # a HEAD answer has no body to name it
        bad.stat_blob(_digest(b"x"))
    assert head_info.value.hint is not None and "credentials" in head_info.value.hint
    with pytest.raises(S3Error):
        bad.start_upload("r")


def test_a_missing_bucket_is_named(seaweed: Seaweed) -> None:
    location = seaweed.location().replace(f"s3://{seaweed.bucket}/", "s3://no-such-bucket/")
    with pytest.raises(S3Error) as info:
        open_storage(location)
    assert info.value.code == "NoSuchBucket"
    assert info.value.hint == "create the bucket first"


def test_unsigned_requests_are_refused(seaweed: Seaweed) -> None:
    # The server really checks signatures: a plain request gets 403.
    host, port = seaweed.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"GET /{seaweed.bucket}?list-type=2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


def test_open_storage_urls(seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    base = f"s3://{seaweed.bucket}/envtest?endpoint={seaweed.endpoint}"
    with pytest.raises(InvalidArgument):
        open_storage(base)  # no credentials anywhere
    with pytest.raises(InvalidArgument):
        open_storage(base + "&colour=blue")
    with pytest.raises(InvalidArgument):
        open_storage("s3:///nobucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    s = _s3(base + "&region=eu-west-1")
    assert (s.client.bucket, s.prefix, s.client.region) == (seaweed.bucket, "envtest/", "eu-west-1")
    s.put_manifest("r", _digest(b"{}"), "application/json", b"{}")
    # Prefixes are separate stores in one bucket.
    other = _s3(seaweed.location())
    assert other.list_repositories() == []
    assert _s3(base).list_repositories() == ["r"]


# -- uploads in pieces -------------------------------------------------------------------


def test_chunks_across_the_part_minimum(seaweed: Seaweed) -> None:
    s = _s3(seaweed.location())
    sizes = [3 * MIB, 3 * MIB, 1, MIB, SEGMENT + 3 * MIB, 2, 64 * 1024, 5 * MIB]
    data = os.urandom(sum(sizes))
    uuid = s.start_upload("r")
    pos = 0
    for n in sizes:
        pos += n
        assert s.append_upload("r", uuid, io.BytesIO(data[pos - n : pos])) == pos
        state = _state(s, uuid)
        segments = state["segments"]
        pending = state["pending"]
        assert isinstance(segments, list) and isinstance(pending, list)
        # Every stored segment can be a multipart part; small pieces stay under 5 MiB.
        assert all(MIN_PART <= size <= SEGMENT + MIB for _key, size in segments)
        assert sum(size for _key, size in pending) < MIN_PART
        assert sum(size for _key, size in segments + pending) == pos
    assert s.finish_upload("r", uuid, _digest(data)) == _digest(data)
    assert _read(s, _digest(data)) == data
    assert _read(s, _digest(data), 5 * MIB - 3, 7) == data[5 * MIB - 3 : 5 * MIB + 4]
    assert list(s.iter_uploads()) == []
    assert [
        k for k in s.client.list_objects(f"{s.prefix}_uploads/") if not isinstance(k, str)
    ] == []


def test_chunks_reaching_different_processes(seaweed: Seaweed) -> None:
    # Two drivers stand for two registry processes behind one load balancer: neither
    # saw every byte, so finish reads the pieces back to verify them.
    location = seaweed.location()
    one, two = _s3(location), _s3(location)
    data = os.urandom(7 * MIB + 5)
    uuid = one.start_upload("r")
    for i, start in enumerate(range(0, len(data), 2 * MIB)):
        (one, two)[i % 2].append_upload("r", uuid, [data[start : start + 2 * MIB]])
    assert _state(one, uuid)["sha256"] is None
    with pytest.raises(LaminaError):
        two.finish_upload("r", uuid, _digest(data + b"x"))  # the re-read catches it
    uuid = one.start_upload("r")
    for i, start in enumerate(range(0, len(data), 3 * MIB)):
        (two, one)[i % 2].append_upload("r", uuid, [data[start : start + 3 * MIB]])
    assert one.finish_upload("r", uuid, _digest(data, "sha512")) == _digest(data, "sha512")
    assert _read(two, _digest(data, "sha512")) == data


def test_many_small_chunks(seaweed: Seaweed) -> None:
    s = _s3(seaweed.location())
    data = os.urandom(6 * MIB + 100)
    uuid = s.start_upload("r")
    step = 512 * 1024
    for start in range(0, len(data), step):
        s.append_upload("r", uuid, [data[start : start + step]])
    assert _state(s, uuid)["sha256"] == hashlib.sha256(data).hexdigest()
    assert s.finish_upload("r", uuid, _digest(data)) == _digest(data)
    assert _read(s, _digest(data)) == data


def test_racing_appends_are_refused(seaweed: Seaweed) -> None:
    s = _s3(seaweed.location())
    uuid = s.start_upload("r")
    go = threading.Event()
    errors: list[BaseException] = []

    def slow() -> Iterator[bytes]:
        yield b"a" * 100
        go.wait(30)

    def first() -> None:
        try:
            s.append_upload("r", uuid, slow())
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert s.append_upload("r", uuid, [b"b" * 10]) == 10
    go.set()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], Conflict)
    assert s.upload_size("r", uuid) == 10
    assert s.finish_upload("r", uuid, _digest(b"b" * 10)) == _digest(b"b" * 10)


_BIG = """
import hashlib, sys, time
from lamina.oci.digest import Digest
from lamina.registry.storage import open_storage
s = open_storage(sys.argv[1])
MIB = 1 << 20
def hwm_mib():
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) // 1024
base = hwm_mib()  # the interpreter, the S3 library and its client, before any blob byte
class Source:
    def __init__(self): self.i = 0; self.h = hashlib.sha256()
    def read(self, n=-1):
        if self.i == 64: return b""
        self.i += 1
        block = hashlib.sha512(str(self.i).encode()).digest() * (MIB // 64)
        self.h.update(block)
        return block
src = Source()
t = time.monotonic()
uuid = s.start_upload("big")
assert s.append_upload("big", uuid, src) == 64 * MIB
d = s.finish_upload("big", uuid, Digest("sha256", src.h.hexdigest()))
push = time.monotonic() - t
t = time.monotonic()
h = hashlib.sha256()
with s.open_blob(d) as r:
    while block := r.read(MIB):
        h.update(block)
assert h.hexdigest() == d.encoded
pull = time.monotonic() - t
print(hwm_mib(), base, round(push, 2), round(pull, 2))
"""


def test_64_mib_blob_streams_in_bounded_memory(seaweed: Seaweed) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BIG, seaweed.location()],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    rss_mib, base_mib, push_s, pull_s = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    print(
        f"64 MiB blob: peak RSS {rss_mib} MiB ({base_mib} before), push {push_s} s, pull {pull_s} s"
    )
    # The blob is 64 MiB: moving it grew the peak by under half of that, so it never sat
    # whole in memory. The floor is aiobotocore's (aiohttp 17 MiB, botocore and its S3
    # model 26 MiB), which the stdlib client lamina had did not pay; capped too.
    assert rss_mib - base_mib < 32
    assert rss_mib < 96


# -- dropped connections and 5xx ----------------------------------------------------------


class FlakyProxy:
    """A TCP proxy in front of SeaweedFS; ``plan`` says what to do to each new connection:
    "ok" relays, "drop" closes it unanswered, "503" answers Service Unavailable, and
    an int relays that many response bytes, then cuts the connection."""

    def __init__(self, target: str, plan: list[str | int]) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.plan = list(plan)
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            action = self.plan.pop(0) if self.plan else "ok"
            self.accepted += 1
            threading.Thread(target=self._handle, args=(client, action), daemon=True).start()

    def _handle(self, client: socket.socket, action: str | int) -> None:
        with client:
            if action == "drop":
                client.recv(65536)
                return
            if action == "503":
                client.recv(65536)
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
                return
            upstream = socket.create_connection(self.target)
            budget = [None if action == "ok" else int(action)]
            t = threading.Thread(target=self._pump, args=(client, upstream, [None]), daemon=True)
            t.start()
            self._pump(upstream, client, budget)
            upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, budget: list[int | None]) -> None:
        try:
            while data := src.recv(65536):
                left = budget[0]
                if left is not None:
                    data = data[:left]
                    budget[0] = left - len(data)
                dst.sendall(data)
                if budget[0] == 0:
                    break
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def _through(seaweed: Seaweed, proxy: FlakyProxy, prefix: str) -> S3Storage:
    return _s3(seaweed.location(prefix, endpoint=proxy.endpoint))


def test_dropped_connections_and_5xx_are_retried(seaweed: Seaweed) -> None:
    direct = _s3(seaweed.location())
    prefix = direct.prefix.rstrip("/")
    data = os.urandom(3 * MIB + 11)
    uuid = direct.start_upload("r")
    direct.append_upload("r", uuid, [data])
    d = direct.finish_upload("r", uuid, _digest(data))
    proxy = FlakyProxy(seaweed.endpoint, [])
    try:
        s = _through(seaweed, proxy, prefix)  # its check at open goes through cleanly
        s.client.close()
        proxy.accepted = 0
        proxy.plan = ["drop", "503", "ok"]
        assert s.stat_blob(d) == len(data)  # third connection answers
        assert proxy.accepted == 3
        # Cut mid-body twice: the reader resumes with Range GETs from where it was.
        proxy.plan = [MIB, 2 * MIB]
        s.client.close()  # no idle keep-alive connection: the next GET dials anew
        assert _read(s, d) == data
        assert proxy.accepted >= 5
        # An upload through a connection that drops before answering still lands once.
        proxy.plan = ["drop"]
        s.client.close()
        uuid = s.start_upload("r")
        s.append_upload("r", uuid, [b"through a flaky link"])
        assert s.finish_upload("r", uuid, _digest(b"through a flaky link"))
        assert direct.has_link("r", _digest(b"through a flaky link"))
    finally:
        proxy.close()


def test_a_dead_endpoint_fails_clearly(seaweed: Seaweed, tmp_path: Path) -> None:
    proxy = FlakyProxy(seaweed.endpoint, ["drop"] * 100)
    try:
        client = S3Client(
            proxy.endpoint,
            seaweed.bucket,
            Credentials(seaweed.access_key, seaweed.secret_key),
            retries=3,
        )
        with pytest.raises(S3Error) as info:
            client.head("x")
        assert info.value.hint is not None and proxy.endpoint in info.value.hint
        # Three attempts (botocore's), each re-sent once at once by aiohttp: a HEAD is
        # idempotent and its connection was dropped unanswered (a stale keep-alive one,
        # as aiohttp sees it).
        assert proxy.accepted == 3 * 2
    finally:
        proxy.close()
    del tmp_path


def test_a_state_commit_whose_answer_was_lost(seaweed: Seaweed) -> None:
    # A retried If-Match PUT of the state gets 412 when its first try landed unanswered:
    # that is success, not a conflict; a different state in its place is a conflict.
    s = _s3(seaweed.location())
    uuid = s.start_upload("r")
    key = f"{s.prefix}_uploads/{uuid}/state"
    old = s.client.head(key)
    assert old is not None
    landed = UploadState("r", 1.0, 3, (), (), None)
    s.client.put(key, landed.to_bytes())  # the first try, whose answer "was lost"
    s._commit_state(uuid, old.etag, landed)  # the retry: no error
    with pytest.raises(Conflict):
        s._commit_state(uuid, old.etag, UploadState("r", 1.0, 4, (), (), None))


def test_a_failed_append_leaves_the_upload_as_it_was(seaweed: Seaweed) -> None:
    s = _s3(seaweed.location())
    uuid = s.start_upload("r")
    head = os.urandom(MIB)
    assert s.append_upload("r", uuid, [head]) == MIB

    def broken() -> Iterator[bytes]:
        for _ in range(SEGMENT // MIB + 2):  # one whole segment is stored first
            yield os.urandom(MIB)
        raise OSError("client went away")

    with pytest.raises(OSError):
        s.append_upload("r", uuid, broken())
    assert s.upload_size("r", uuid) == MIB
    keys = [i.key for i in s.client.list_objects(f"{s.prefix}_uploads/{uuid}/")]
    state = _state(s, uuid)
    stored = {f"{s.prefix}_uploads/{uuid}/{k}" for k, _n in state["pending"]}  # type: ignore[union-attr]
    assert set(keys) == stored | {f"{s.prefix}_uploads/{uuid}/state"}  # no stray pieces
    tail = os.urandom(100)
    assert s.append_upload("r", uuid, [tail]) == MIB + 100
    assert s.finish_upload("r", uuid, _digest(head + tail)) == _digest(head + tail)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_chunkings_round_trip(seaweed: Seaweed, seed: int) -> None:
    # Chunk sizes drawn around the boundaries that matter (5 MiB parts, 16 MiB
    # segments), some appends from streams, then a finish and a byte-exact read back.
    rng = random.Random(seed)
    s = _s3(seaweed.location())
    sizes = [
        rng.choice([1, 4096, MIB - 1, 2 * MIB + 1, MIN_PART - 1, MIN_PART + 1]) for _ in range(7)
    ]
    data = rng.randbytes(sum(sizes))
    uuid = s.start_upload("r")
    pos = 0
    for n in sizes:
        piece = data[pos : pos + n]
        pos += n
        src = io.BytesIO(piece) if rng.random() < 0.5 else [piece]
        assert s.append_upload("r", uuid, src) == pos
    algorithm = rng.choice(["sha256", "sha512"])
    assert s.finish_upload("r", uuid, _digest(data, algorithm)) == _digest(data, algorithm)
    assert _read(s, _digest(data, algorithm)) == data
