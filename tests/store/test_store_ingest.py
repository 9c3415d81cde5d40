"""LocalStore ingest and verified reads: happy paths, mismatches, damage on disk, layout."""

from __future__ import annotations

import gc as pygc
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.errors import (
    Conflict,
    DigestMismatch,
    IntegrityError,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SizeMismatch,
)
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store import BlobWriter, LocalStore, Store, default_root
from lamina.store.verify import VerifyingReader

MiB = 1 << 20


def _data(n: int) -> bytes:
    return os.urandom(n)


def _blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def _temps(root: Path) -> list[Path]:
    return sorted((root / "ingest").iterdir())


class CountingStream(io.RawIOBase):
    """An endless stream of zeros that counts what it hands out."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = len(b)
        b[:n] = bytes(n)
        self.given += n
        return n


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("size", [0, 1, 5000, 3 * MiB + 17])
def test_ingest_stream_roundtrip(store: LocalStore, root: Path, algorithm: str, size: int) -> None:
    data = _data(size)
    digest = Digest.from_bytes(data, algorithm)
    info = store.ingest(io.BytesIO(data), digest, size)
    assert (info.digest, info.size) == (digest, size)
    assert store.has(digest)
    assert store.info(digest) == info
    assert Path(store.blob_path(digest)) == root / "blobs" / algorithm / digest.encoded
    assert store.read_blob(digest, max_size=size) == data
    with store.open_blob(digest, size) as reader:
        assert reader.read() == data
    assert list(store.iter_blobs()) == [info]
    assert _temps(root) == []


def test_ingest_without_expectations_computes_digest(store: LocalStore) -> None:
    data = _data(2 * MiB)
    info = store.ingest(io.BytesIO(data))
    assert info.digest == Digest.from_bytes(data)
    assert info.size == len(data)


def test_put_bytes_and_writer(store: LocalStore) -> None:
    assert store.put_bytes(b"hello").digest == Digest.from_bytes(b"hello")
    with store.writer("sha512") as w:
        for _ in range(1000):  # small writes are buffered, large ones go straight through
            w.write(b"abc")
        w.write(memoryview(bytes(2 * MiB)))
        assert w.size == 3000 + 2 * MiB
        info = w.commit()
    expected = b"abc" * 1000 + bytes(2 * MiB)
    assert info.digest == Digest.from_bytes(expected, "sha512")
    assert store.read_blob(info.digest) == expected


@pytest.mark.parametrize(
    ("kind", "error"),
    [("digest", DigestMismatch), ("size", SizeMismatch), ("short", SizeMismatch)],
)
def test_ingest_mismatch_leaves_nothing(
    store: LocalStore, root: Path, kind: str, error: type[Exception]
) -> None:
    data = _data(MiB + 3)
    digest = Digest.from_bytes(data)
    if kind == "digest":
        args = (Digest.from_bytes(b"other"), len(data))
    elif kind == "size":
        args = (digest, len(data) + 1)
    else:  # a truncated stream: the descriptor promises more than arrives
        args = (digest, len(data))
        data = data[: len(data) // 2]
    with pytest.raises(error):
        store.ingest(io.BytesIO(data), *args)
    assert _blob_files(root) == []
    assert _temps(root) == []
    assert not store.has(digest)


def test_put_bytes_wrong_digest(store: LocalStore, root: Path) -> None:
    with pytest.raises(DigestMismatch):
        store.put_bytes(b"abc", Digest.from_bytes(b"abd"))
    assert _blob_files(root) == [] and _temps(root) == []


def test_overlong_stream_is_not_read_past_size_plus_one(store: LocalStore, root: Path) -> None:
    stream = CountingStream()
    with pytest.raises(SizeMismatch):
        store.ingest(stream, Digest.from_bytes(bytes(100)), 100)  # type: ignore[arg-type]
    assert stream.given <= 101
    assert _blob_files(root) == [] and _temps(root) == []


def test_writer_abort_and_exit_without_commit(store: LocalStore, root: Path) -> None:
    w = store.writer()
    w.write(b"x" * 10)
    assert len(_temps(root)) == 1
    w.abort()
    assert _temps(root) == []
    with pytest.raises(Conflict):
        w.write(b"y")
    with store.writer() as w2:
        w2.write(b"y")
    assert _temps(root) == [] and _blob_files(root) == []


def test_writer_rejects_other_algorithm(store: LocalStore, root: Path) -> None:
    with store.writer("sha256") as w:
        w.write(b"abc")
        with pytest.raises(InvalidArgument):
            w.commit(Digest.from_bytes(b"abc", "sha512"))
    assert _temps(root) == [] and _blob_files(root) == []
    with pytest.raises(InvalidArgument):
        store.writer("md5")


def test_dropped_writer_cleans_up_and_releases_lease(store: LocalStore, root: Path) -> None:
    w = store.writer()
    w.write(b"dropped")
    del w
    pygc.collect()
    assert _temps(root) == []
    store.gc(timeout=2)  # would time out if the writer's lease had leaked


def test_existing_blob_is_verified_but_not_replaced(store: LocalStore) -> None:
    data = _data(MiB)
    digest = Digest.from_bytes(data)
    store.put_bytes(data)
    inode = os.stat(store.blob_path(digest)).st_ino
    # The cheap path (expected + size of a present blob) still checks the input.
    with pytest.raises(DigestMismatch):
        store.ingest(io.BytesIO(bytes(len(data))), digest, len(data))
    with pytest.raises(SizeMismatch):
        store.ingest(io.BytesIO(data[:-1]), digest, len(data))
    assert store.ingest(io.BytesIO(data), digest, len(data)).digest == digest
    assert store.ingest(io.BytesIO(data)).digest == digest
    assert store.put_bytes(data, digest).digest == digest
    assert os.stat(store.blob_path(digest)).st_ino == inode
    assert store.read_blob(digest, MiB) == data


def test_truncated_blob_on_disk_is_replaced_by_a_fresh_ingest(store: LocalStore) -> None:
    data = _data(5000)
    digest = Digest.from_bytes(data)
    store.put_bytes(data)
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    os.truncate(path, 100)
    store.ingest(io.BytesIO(data), digest)  # size unknown to the caller: full path
    assert store.read_blob(digest) == data


def _corrupt(store: LocalStore, digest: Digest, offset: int) -> None:
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_blob_fails_open_blob_at_the_end(store: LocalStore) -> None:
    data = _data(3 * MiB)
    info = store.put_bytes(data)
    _corrupt(store, info.digest, MiB)
    reader = store.open_blob(info.digest, info.size)
    first = reader.read(MiB)
    assert first == data[:MiB]  # the damage is not known until the end
    with pytest.raises(DigestMismatch):
        while reader.read(MiB):
            pass
    with pytest.raises(DigestMismatch):  # and stays failed
        reader.read(1)
    reader.close()
    with pytest.raises(DigestMismatch):
        store.read_blob(info.digest, 4 * MiB)


def test_reading_exactly_size_bytes_verifies(store: LocalStore) -> None:
    # A consumer that stops at the descriptor's size (never asking for EOF) is still told.
    data = _data(4096 + 10)
    info = store.put_bytes(data)
    _corrupt(store, info.digest, 7)
    with store.open_blob(info.digest) as reader, pytest.raises(DigestMismatch):
        reader.read(info.size)


def test_verified_reader_is_usable_through_buffered_reader(store: LocalStore) -> None:
    data = _data(2 * MiB + 5)
    info = store.put_bytes(data)
    with io.BufferedReader(store.open_blob(info.digest), 65536) as f:
        assert f.read(10) == data[:10]
        assert f.read() == data[10:]
    _corrupt(store, info.digest, 0)
    with (
        io.BufferedReader(store.open_blob(info.digest)) as f,
        pytest.raises(DigestMismatch),
    ):
        f.read()


def test_size_mismatches_on_disk(store: LocalStore, tmp_path: Path) -> None:
    data = _data(10_000)
    info = store.put_bytes(data)
    with pytest.raises(SizeMismatch):
        store.open_blob(info.digest, info.size + 1)
    # Truncated on disk: the digest of what is left does not match.
    path = store.blob_path(info.digest)
    os.chmod(path, 0o644)
    os.truncate(path, 5000)
    with pytest.raises(IntegrityError):
        store.read_blob(info.digest)
    # A file longer than the expected size fails at the end (the extra-byte probe).
    longer = tmp_path / "longer"
    longer.write_bytes(data + b"!")
    fd = os.open(longer, os.O_RDONLY)
    with VerifyingReader(fd, info.digest, info.size) as reader, pytest.raises(SizeMismatch):
        reader.read()


def test_read_blob_cap_and_not_found(store: LocalStore) -> None:
    info = store.put_bytes(b"x" * 1000)
    with pytest.raises(LimitExceeded):
        store.read_blob(info.digest, max_size=999)
    missing = Digest.from_bytes(b"missing")
    for call in (store.info, store.open_blob, store.read_blob, store.blob_path, store.delete_blob):
        with pytest.raises(NotFound):
            call(missing)
    assert not store.has(missing)
    store.delete_blob(info.digest)
    assert not store.has(info.digest)
    assert list(store.iter_blobs()) == []


def test_raw_strings_never_become_paths(store: LocalStore) -> None:
    with pytest.raises(InvalidArgument):
        store.has("sha256/../../etc/passwd")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Digest("sha256", "../" + "a" * 61)


def test_iter_blobs_ignores_foreign_files(store: LocalStore, root: Path) -> None:
    info = store.put_bytes(b"mine")
    (root / "blobs" / "sha256" / "README").write_text("not a blob")
    assert list(store.iter_blobs()) == [info]
    assert store.gc().removed_blobs == 1
    assert (root / "blobs" / "sha256" / "README").exists()


def test_permissions(tmp_path: Path) -> None:
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        store = LocalStore(tmp_path / "a" / "root")
    finally:
        os.umask(old)
    root = Path(store.root)
    for d in (root, root / "blobs", root / "blobs" / "sha256", root / "ingest", root / "locks"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    info = store.put_bytes(b"read only")
    assert stat.S_IMODE(os.stat(store.blob_path(info.digest)).st_mode) == 0o444
    store.set_ref("x", Descriptor("application/octet-stream", info.digest, info.size))
    assert stat.S_IMODE((root / "refs.json").stat().st_mode) == 0o600


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidArgument):
        LocalStore(tmp_path / "f")


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMINA_ROOT", str(tmp_path / "r"))
    assert default_root() == str(tmp_path / "r")
    monkeypatch.delenv("LAMINA_ROOT")
    if os.geteuid() == 0:
        assert default_root() == "/var/lib/lamina"


@pytest.mark.root
def test_default_root_unprivileged(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid")
    script = (
        "import os; from lamina.store import default_root; os.seteuid(65534); print(default_root())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LAMINA_ROOT", "XDG_DATA_HOME")}
    env["HOME"] = "/home/nobody"
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "XDG_DATA_HOME": "/xdg"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "/xdg/lamina"
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "XDG_DATA_HOME": "relative/ignored"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "/home/nobody/.local/share/lamina"


def test_local_store_satisfies_the_contract(store: LocalStore) -> None:
    # Static (mypy --strict) and runtime: LocalStore is a Store, its writer a BlobWriter.
    contract: Store = store
    with contract.writer() as w:
        writer: BlobWriter = w
        writer.write(b"contract")
        assert writer.commit().size == 8
