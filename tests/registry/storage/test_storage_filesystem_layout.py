"""What only the filesystem driver promises: its on-disk layout, file modes, streaming
reads in 1 MiB pieces, and the sweep of crash leftovers."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from lamina.oci.digest import Digest
from lamina.registry.storage import FilesystemStorage, open_storage
from lamina.registry.storage.api import CHUNK
from lamina.registry.storage.filesystem import GARBAGE_AGE


def _digest(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def test_layout(tmp_path: Path) -> None:
    s = FilesystemStorage(tmp_path)
    uuid = s.start_upload("a/b")
    s.append_upload("a/b", uuid, [b"layer"])
    d = s.finish_upload("a/b", uuid, _digest(b"layer"))
    blob = tmp_path / "blobs" / "sha256" / d.encoded
    assert blob.read_bytes() == b"layer"
    assert blob.stat().st_mode & 0o777 == 0o444
    link = tmp_path / "repositories" / "a" / "b" / "_layers" / "sha256" / d.encoded
    assert link.read_text() == str(d)
    m = b"{}"
    md = _digest(m)
    s.put_manifest("a/b", md, "application/vnd.oci.image.manifest.v1+json", m)
    s.tag("a/b", "v1", md)
    repo = tmp_path / "repositories" / "a" / "b" / "_manifests"
    assert (repo / "revisions" / "sha256" / md.encoded).is_file()
    assert (repo / "tags" / "v1").read_text() == str(md)
    assert (tmp_path / "blobs" / "sha256" / md.encoded).read_bytes() == m
    assert os.listdir(tmp_path / "_uploads") == []


def test_existing_blob_is_kept(tmp_path: Path) -> None:
    s = FilesystemStorage(tmp_path)
    data = b"same bytes"
    for name in ("one", "two"):
        uuid = s.start_upload(name)
        s.append_upload(name, uuid, [data])
        if name == "two":
            before = os.stat(tmp_path / "blobs" / "sha256" / _digest(data).encoded).st_ino
        s.finish_upload(name, uuid, _digest(data))
    after = os.stat(tmp_path / "blobs" / "sha256" / _digest(data).encoded).st_ino
    assert before == after  # a reader holding the first copy never sees it swapped


class _Recorder:
    def __init__(self, total: int) -> None:
        self.left = total
        self.asked: list[int] = []

    def read(self, size: int = -1, /) -> bytes:
        self.asked.append(size)
        n = min(self.left, size if size >= 0 else self.left)
        self.left -= n
        return b"z" * n


def test_stream_is_read_in_chunks(tmp_path: Path) -> None:
    s = FilesystemStorage(tmp_path)
    uuid = s.start_upload("r")
    src = _Recorder(5 * CHUNK + 1)
    assert s.append_upload("r", uuid, src) == 5 * CHUNK + 1
    assert src.asked and all(0 < n <= CHUNK for n in src.asked)


def test_crash_leftovers_swept_only_when_old(tmp_path: Path) -> None:
    s = FilesystemStorage(tmp_path)
    base = tmp_path / "_uploads"
    old = base / ".dead.new"
    young = base / ".busy.new"
    for d in (old, young):
        d.mkdir()
        (d / "data").write_bytes(b"x")
    past = time.time() - GARBAGE_AGE - 10
    os.utime(old, (past, past))
    uuid = s.start_upload("r")
    assert [u.uuid for u in s.iter_uploads()] == [uuid]
    assert not old.exists()
    assert young.exists()


def test_open_storage(tmp_path: Path) -> None:
    s = open_storage(f"file://{tmp_path}/x")
    assert isinstance(s, FilesystemStorage)
    assert s.root == str(tmp_path / "x")


def test_a_session_without_its_name_is_expired_by_its_empty_name(tmp_path: Path) -> None:
    s = FilesystemStorage(tmp_path)
    uuid = s.start_upload("r")
    s.append_upload("r", uuid, [b"half"])
    (tmp_path / "_uploads" / uuid / "name").unlink()  # a crash between the two writes
    [info] = [u for u in s.iter_uploads() if u.uuid == uuid]
    assert info.name == ""
    live = s.start_upload("r")
    s.cancel_upload("", live)  # a named session is not the sweep's to take this way
    assert any(u.uuid == live for u in s.iter_uploads())
    s.cancel_upload("", uuid)
    assert not any(u.uuid == uuid for u in s.iter_uploads())
