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


def test_sweep_temporaries_takes_only_old_leftovers_never_a_session(tmp_path: Path) -> None:
    from lamina.atomic import write_atomic

    s = FilesystemStorage(tmp_path)
    data = b"a layer"
    uuid = s.start_upload("lib/a")
    s.append_upload("lib/a", uuid, [data])
    d = s.finish_upload("lib/a", uuid, _digest(data))
    s.put_manifest("lib/a", d, "application/octet-stream", data)
    s.tag("lib/a", "v1", d)
    live = s.start_upload("lib/a")
    s.append_upload("lib/a", live, [b"half a blob"])
    old = time.time() - 7200

    def leftover(target: Path) -> Path:
        tmp = target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp"
        tmp.write_bytes(b"x")
        os.utime(tmp, (old, old))
        return tmp

    repo = tmp_path / "repositories" / "lib" / "a"
    stale = [
        leftover(tmp_path / "blobs" / "sha256" / d.encoded),
        leftover(repo / "_layers" / "sha256" / d.encoded),
        leftover(repo / "_manifests" / "revisions" / "sha256" / d.encoded),
        leftover(repo / "_manifests" / "tags" / "v1"),
    ]
    fresh = tmp_path / "blobs" / "sha256" / f".{d.encoded}.{os.urandom(6).hex()}.tmp"
    fresh.write_bytes(b"being written")
    staging = tmp_path / "_uploads" / ".dead.new"
    staging.mkdir()
    (staging / "data").write_bytes(b"x")
    os.utime(staging, (old, old))
    session = tmp_path / "_uploads" / live
    os.utime(session, (old, old))  # an old live session is the TTL's business, not this
    for path in session.iterdir():
        os.utime(path, (old, old))
    # names that only look alike stay
    lookalike = tmp_path / "blobs" / "sha256" / "notes.tmp"
    lookalike.write_bytes(b"x")
    os.utime(lookalike, (old, old))

    listed = s.sweep_temporaries(3600, dry_run=True)
    assert all(p.exists() for p in stale) and staging.exists()
    swept = s.sweep_temporaries(3600)
    assert swept == listed
    assert sorted(swept) == sorted(
        [str(p.relative_to(tmp_path)) for p in stale] + ["_uploads/.dead.new"]
    )
    assert not any(p.exists() for p in stale) and not staging.exists()
    assert fresh.exists() and lookalike.exists()
    assert s.upload_size("lib/a", live) == len(b"half a blob")
    assert s.resolve_tag("lib/a", "v1") == d and s.has_link("lib/a", d)
    # write_atomic leaves nothing once done; with no age at all only ``fresh`` goes
    write_atomic(str(tmp_path / "repositories" / "probe"), b"x")
    assert s.sweep_temporaries(0.0, now=time.time() + 1) == [str(fresh.relative_to(tmp_path))]
    assert s.sweep_temporaries(0.0, now=time.time() + 1) == []
