"""One suite for every registry storage driver: add a driver by adding a ``DRIVERS`` entry
(a factory from the test's request and a fresh temp dir to the ``--storage`` location
``open_storage`` takes). The S3 driver runs on a real SeaweedFS, started once per test
process and only when an S3 test is selected; each test gets its own key prefix."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.errors import DigestMismatch, InvalidArgument, LaminaError, NotFound
from lamina.oci.digest import Digest
from lamina.registry.storage import RegistryStorage, open_storage

# name -> (request, tmp_path) -> location
DRIVERS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "filesystem": lambda request, tmp: str(tmp / "registry"),
    "s3": lambda request, tmp: request.getfixturevalue("seaweed").location(),
}

MIB = 1 << 20


@pytest.fixture(params=sorted(DRIVERS))
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return DRIVERS[request.param](request, tmp_path)


@pytest.fixture
def storage(location: str) -> RegistryStorage:
    return open_storage(location)


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def push(s: RegistryStorage, name: str, data: bytes, chunks: int = 1) -> Digest:
    uuid = s.start_upload(name)
    step = max(1, -(-len(data) // chunks))
    for i in range(0, len(data), step):
        s.append_upload(name, uuid, [data[i : i + step]])
    return s.finish_upload(name, uuid, digest_of(data))


def read_all(s: RegistryStorage, d: Digest, offset: int = 0, length: int | None = None) -> bytes:
    with s.open_blob(d, offset, length) as r:
        out = bytearray()
        while chunk := r.read(7919):  # odd size: exercises partial reads
            out += chunk
        return bytes(out)


def test_blob_round_trip_and_ranges(storage: RegistryStorage) -> None:
    data = os.urandom(3 * MIB + 17)
    d = push(storage, "library/busybox", data)
    assert d == digest_of(data)
    assert storage.stat_blob(d) == len(data)
    assert read_all(storage, d) == data
    assert read_all(storage, d, 5, 10) == data[5:15]
    assert read_all(storage, d, MIB) == data[MIB:]
    assert read_all(storage, d, len(data)) == b""
    assert list(storage.iter_blobs()) == [d]
    with pytest.raises(InvalidArgument):
        storage.open_blob(d, len(data) - 1, 2)
    path = storage.blob_path(d)
    if path is not None:
        assert Path(path).read_bytes() == data
        # Blobs are read-only: a sendfile reader may never see them change.
        assert os.stat(path).st_mode & 0o222 == 0


def test_sha512_blob(storage: RegistryStorage) -> None:
    data = b"sha512 content"
    uuid = storage.start_upload("a")
    storage.append_upload("a", uuid, io.BytesIO(data))
    d = storage.finish_upload("a", uuid, digest_of(data, "sha512"))
    assert d.algorithm == "sha512"
    assert read_all(storage, d) == data


def test_empty_blob(storage: RegistryStorage) -> None:
    uuid = storage.start_upload("r")
    assert storage.append_upload("r", uuid, []) == 0
    d = storage.finish_upload("r", uuid, digest_of(b""))
    assert storage.stat_blob(d) == 0
    assert read_all(storage, d) == b""
    assert read_all(storage, d, 0, 0) == b""
    assert storage.has_link("r", d)


def test_missing_blob(storage: RegistryStorage) -> None:
    d = digest_of(b"nothing")
    with pytest.raises(NotFound):
        storage.stat_blob(d)
    with pytest.raises(NotFound):
        storage.open_blob(d)
    with pytest.raises(NotFound):
        storage.delete_blob(d)
    with pytest.raises(NotFound):
        storage.link_blob("a", d)
    assert not storage.has_link("a", d)


def test_links_are_per_repository(storage: RegistryStorage) -> None:
    d = push(storage, "team/a", b"layer")
    assert storage.has_link("team/a", d)
    assert not storage.has_link("team/b", d)
    storage.link_blob("team/b", d)  # cross-repository mount
    storage.link_blob("team/b", d)  # idempotent
    assert storage.has_link("team/b", d)
    storage.unlink_blob("team/a", d)
    assert not storage.has_link("team/a", d)
    assert storage.has_link("team/b", d)
    with pytest.raises(NotFound):
        storage.unlink_blob("team/a", d)
    assert storage.list_repositories() == ["team/a", "team/b"]


def test_chunked_upload_and_status(storage: RegistryStorage) -> None:
    data = os.urandom(2 * MIB + 3)
    uuid = storage.start_upload("r")
    assert storage.upload_size("r", uuid) == 0
    assert storage.append_upload("r", uuid, [data[:MIB]]) == MIB
    assert storage.append_upload("r", uuid, io.BytesIO(data[MIB : MIB + 5])) == MIB + 5
    assert storage.append_upload("r", uuid, iter([data[MIB + 5 :]])) == len(data)
    assert storage.upload_size("r", uuid) == len(data)
    (info,) = list(storage.iter_uploads())
    assert (info.name, info.uuid, info.size) == ("r", uuid, len(data))
    assert info.started > 0
    # Another repository may not touch this session.
    with pytest.raises(NotFound):
        storage.append_upload("other", uuid, [b"x"])
    with pytest.raises(NotFound):
        storage.finish_upload("other", uuid, digest_of(data))
    d = storage.finish_upload("r", uuid, digest_of(data))
    assert read_all(storage, d) == data
    assert list(storage.iter_uploads()) == []
    with pytest.raises(NotFound):
        storage.upload_size("r", uuid)


def test_digest_mismatch_leaves_nothing(storage: RegistryStorage) -> None:
    uuid = storage.start_upload("r")
    storage.append_upload("r", uuid, [b"actual bytes"])
    claimed = digest_of(b"other bytes")
    with pytest.raises(DigestMismatch):
        storage.finish_upload("r", uuid, claimed)
    assert list(storage.iter_blobs()) == []
    assert not storage.has_link("r", claimed)
    assert not storage.has_link("r", digest_of(b"actual bytes"))
    assert storage.list_repositories() == []
    assert list(storage.iter_uploads()) == []


def test_cancel_upload(storage: RegistryStorage) -> None:
    uuid = storage.start_upload("r")
    storage.append_upload("r", uuid, [b"abc"])
    storage.cancel_upload("r", uuid)
    storage.cancel_upload("r", uuid)  # idempotent
    with pytest.raises(NotFound):
        storage.append_upload("r", uuid, [b"d"])
    with pytest.raises(NotFound):
        storage.finish_upload("r", uuid, digest_of(b"abc"))
    assert list(storage.iter_uploads()) == []
    assert list(storage.iter_blobs()) == []


def test_unknown_upload_ids(storage: RegistryStorage) -> None:
    for bad in ("nope", "../../blobs", "", "a/b", ".x"):
        with pytest.raises(NotFound):
            storage.upload_size("r", bad)
        with pytest.raises(NotFound):
            storage.append_upload("r", bad, [b"x"])


MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def test_manifests_and_tags(storage: RegistryStorage) -> None:
    d = digest_of(MANIFEST)
    storage.put_manifest("app", d, OCI_MANIFEST, MANIFEST)
    storage.put_manifest("app", d, OCI_MANIFEST, MANIFEST)  # idempotent
    assert storage.get_manifest("app", d) == (OCI_MANIFEST, MANIFEST)
    assert storage.has_manifest("app", d)
    assert list(storage.iter_manifests("app")) == [d]
    with pytest.raises(NotFound):
        storage.get_manifest("other", d)
    with pytest.raises(DigestMismatch):
        storage.put_manifest("app", digest_of(b"x"), OCI_MANIFEST, MANIFEST)
    for t in ("v2", "latest", "V1", "1.0", "_x"):
        storage.tag("app", t, d)
    assert storage.list_tags("app") == sorted(["v2", "latest", "V1", "1.0", "_x"])
    assert storage.resolve_tag("app", "latest") == d
    other = MANIFEST + b" "
    d2 = digest_of(other)
    storage.put_manifest("app", d2, OCI_MANIFEST, other)
    storage.tag("app", "latest", d2)  # overwrite
    assert storage.resolve_tag("app", "latest") == d2
    storage.untag("app", "v2")
    assert "v2" not in storage.list_tags("app")
    with pytest.raises(NotFound):
        storage.resolve_tag("app", "v2")
    with pytest.raises(NotFound):
        storage.untag("app", "v2")
    with pytest.raises(NotFound):
        storage.tag("app", "x", digest_of(b"never put"))
    with pytest.raises(NotFound):
        storage.list_tags("nosuchrepo")
    # Deleting a manifest removes the tags pointing at it, not the others.
    storage.delete_manifest("app", d)
    assert storage.list_tags("app") == ["latest"]
    with pytest.raises(NotFound):
        storage.get_manifest("app", d)
    with pytest.raises(NotFound):
        storage.delete_manifest("app", d)
    assert storage.get_manifest("app", d2) == (OCI_MANIFEST, other)


def test_repositories_sorted_and_nested(storage: RegistryStorage) -> None:
    d = digest_of(MANIFEST)
    for name in ("zeta", "a/b/c", "a", "a/b-c", "m_x"):
        storage.put_manifest(name, d, OCI_MANIFEST, MANIFEST)
    assert storage.list_repositories() == sorted(["zeta", "a/b/c", "a", "a/b-c", "m_x"])
    storage.start_upload("pending")  # an open upload does not make a repository
    assert "pending" not in storage.list_repositories()


def test_delete_blob(storage: RegistryStorage) -> None:
    d = push(storage, "r", b"to delete")
    storage.delete_blob(d)
    assert not storage.has_link("r", d)
    with pytest.raises(NotFound):
        storage.stat_blob(d)
    assert list(storage.iter_blobs()) == []
    # It can be pushed again afterwards.
    assert push(storage, "r", b"to delete") == d
    assert read_all(storage, d) == b"to delete"


@pytest.mark.parametrize(
    "name", ["../x", "a//b", "Upper", "/abs", "a/../b", "a/", "_layers", "a/_manifests", ""]
)
def test_hostile_names_refused(storage: RegistryStorage, name: str, tmp_path: Path) -> None:
    d = digest_of(MANIFEST)
    calls: list[Callable[[], object]] = [
        lambda: storage.start_upload(name),
        lambda: storage.put_manifest(name, d, OCI_MANIFEST, MANIFEST),
        lambda: storage.link_blob(name, d),
        lambda: storage.has_link(name, d),
        lambda: storage.list_tags(name),
        lambda: storage.resolve_tag(name, "latest"),
    ]
    for call in calls:
        with pytest.raises(LaminaError) as info:
            call()
        assert not isinstance(info.value, NotFound) or name == "", info.value
    assert storage.list_repositories() == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("tag", ["../x", "a/b", ".hidden", "-x", "", "x" * 129])
def test_hostile_tags_refused(storage: RegistryStorage, tag: str) -> None:
    d = digest_of(MANIFEST)
    storage.put_manifest("app", d, OCI_MANIFEST, MANIFEST)
    with pytest.raises(LaminaError) as info:
        storage.tag("app", tag, d)
    assert not isinstance(info.value, NotFound)
    assert storage.list_tags("app") == []


def test_concurrent_finishes_of_one_blob(storage: RegistryStorage) -> None:
    data = os.urandom(MIB + 123)
    want = digest_of(data)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []
    uuids = [storage.start_upload(f"repo{i}") for i in range(16)]
    for i, uuid in enumerate(uuids):
        storage.append_upload(f"repo{i}", uuid, [data])

    def finish(i: int) -> None:
        try:
            barrier.wait()
            assert storage.finish_upload(f"repo{i}", uuids[i], want) == want
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(storage.iter_blobs()) == [want]
    assert read_all(storage, want) == data
    assert all(storage.has_link(f"repo{i}", want) for i in range(16))
    assert list(storage.iter_uploads()) == []


_PUSHER = """
import os, sys, hashlib
from lamina.oci.digest import Digest
from lamina.registry.storage import open_storage
s = open_storage(sys.argv[1])
data = bytes([int(sys.argv[2])]) * (1 << 20) * 3
uuid = s.start_upload("proc")
for i in range(0, len(data), 1 << 18):
    s.append_upload("proc", uuid, [data[i:i + (1 << 18)]])
want = Digest("sha256", hashlib.sha256(data).hexdigest())
sys.stdout.write("ready\\n"); sys.stdout.flush()
if sys.argv[3] == "hang":
    sys.stdin.read()
s.finish_upload("proc", uuid, want)
sys.stdout.write(str(want) + "\\n")
"""


def _run_pusher(location: str, byte: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _PUSHER, location, str(byte), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_finishing_one_blob(storage: RegistryStorage, location: str) -> None:
    procs = [_run_pusher(location, 7, "go") for _ in range(8)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    want = Digest.parse(outs[0][-1])
    assert {o[-1] for o in outs} == {str(want)}
    assert list(storage.iter_blobs()) == [want]
    assert read_all(storage, want) == bytes([7]) * 3 * MIB
    assert list(storage.iter_uploads()) == []


def test_killed_uploader_leaves_nothing_visible(storage: RegistryStorage, location: str) -> None:
    proc = _run_pusher(location, 9, "hang")
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    assert list(storage.iter_blobs()) == []
    assert storage.list_repositories() == []
    stale = list(storage.iter_uploads())
    assert [u.size for u in stale] == [3 * MIB]  # garbage only, for expiry to collect
    data = bytes([9]) * 3 * MIB
    d = push(storage, "proc", data, chunks=3)
    assert read_all(storage, d) == data
    assert storage.has_link("proc", d)
    for u in stale:
        storage.cancel_upload(u.name, u.uuid)
    assert list(storage.iter_uploads()) == []


_LOOPER = """
import os, sys, hashlib
from lamina.oci.digest import Digest
from lamina.registry.storage import open_storage
s = open_storage(sys.argv[1])
i = 0
while True:
    data = os.urandom(1 << 20) * 2 + i.to_bytes(8, "big")
    uuid = s.start_upload("loop")
    s.append_upload("loop", uuid, [data[: 1 << 20], data[1 << 20 :]])
    s.finish_upload("loop", uuid, Digest("sha256", hashlib.sha256(data).hexdigest()))
    i += 1
    if i == 2:
        sys.stdout.write("ready\\n"); sys.stdout.flush()
"""


def test_killed_mid_pushes_leaves_a_consistent_store(
    storage: RegistryStorage, location: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOOPER, location], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.3)  # land the kill somewhere inside an upload or a finish
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    blobs = list(storage.iter_blobs())
    assert len(blobs) >= 2
    for d in blobs:
        with storage.open_blob(d) as r:
            h = hashlib.new(d.algorithm)
            while chunk := r.read(MIB):
                h.update(chunk)
        assert h.hexdigest() == d.encoded  # no torn or half-written blob
    linked = [d for d in blobs if storage.has_link("loop", d)]
    assert len(linked) >= len(blobs) - 1  # at most the one being finished is unlinked
    assert push(storage, "loop", b"after the crash") == digest_of(b"after the crash")
