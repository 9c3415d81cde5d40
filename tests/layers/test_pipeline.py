"""The one-pass layer pipeline (lamina.layers.pipeline): LayerSink and the verified
decompressing stream used by apply."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lamina.errors import (
    DigestMismatch,
    InvalidArgument,
    InvalidFormat,
    LimitExceeded,
    SizeMismatch,
)
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.compression import open_decompressed
from lamina.layers.pipeline import LayerResult, LayerSink, verified_layer_stream
from lamina.layers.tar import TarWriter, read_entries
from lamina.oci import mediatypes as mt
from lamina.oci.digest import Digest


def entries() -> list[tuple[Entry, bytes]]:
    rnd = os.urandom(700_000)
    text = b"".join(b"%d: the quick brown fox\n" % i for i in range(100_000))
    return [
        (Entry("etc", EntryType.DIR, mode=0o755), b""),
        (Entry("etc/random", EntryType.FILE, size=len(rnd)), rnd),
        (Entry("etc/text", EntryType.FILE, size=len(text)), text),
        (Entry("etc/link", EntryType.SYMLINK, linkname="text"), b""),
    ]


def plain_tar(items: list[tuple[Entry, bytes]]) -> bytes:
    out = io.BytesIO()
    w = TarWriter(out)
    for e, d in items:
        w.add_bytes(e, d)
    w.close()
    return out.getvalue()


def commit(items: list[tuple[Entry, bytes]], compression: str) -> tuple[LayerResult, bytes]:
    out = io.BytesIO()
    with LayerSink(out, compression) as sink:
        w = TarWriter(sink)
        for e, d in items:
            w.add_bytes(e, d)
        w.close()
        result = sink.close()
    return result, out.getvalue()


@pytest.mark.parametrize(
    ("compression", "media_type"),
    [("gzip", mt.OCI_LAYER_GZIP), ("zstd", mt.OCI_LAYER_ZSTD), ("", mt.OCI_LAYER)],
)
def test_layer_sink_digests(compression: str, media_type: str) -> None:
    items = entries()
    tar = plain_tar(items)
    result, blob = commit(items, compression)
    assert result.diff_id == Digest.from_bytes(tar)
    assert result.digest == Digest.from_bytes(blob)
    assert result.size == len(blob)
    assert result.uncompressed_size == len(tar)
    assert result.media_type == media_type
    assert result.compression == compression
    assert open_decompressed(io.BytesIO(blob)).read() == tar
    # one pass, deterministic
    again, blob2 = commit(items, compression)
    assert (again, blob2) == (result, blob)


def test_close_is_idempotent_and_write_after_close_fails() -> None:
    sink = LayerSink(io.BytesIO(), "gzip")
    sink.write(b"x" * 1024)
    first = sink.close()
    assert sink.close() is first
    with pytest.raises(InvalidArgument):
        sink.write(b"more")


class FailingOutput:
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            raise OSError(28, "No space left on device")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_output_errors_reach_the_caller(compression: str) -> None:
    data = os.urandom(1 << 20)
    with (
        pytest.raises(OSError, match="No space left"),
        LayerSink(FailingOutput(3 << 20), compression) as sink,
    ):
        for _ in range(200):  # far more than the queues hold
            sink.write(data)
        sink.close()


@pytest.mark.timeout(60)
def test_caller_error_aborts_without_hanging() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError, match="walk failed"), LayerSink(out, "gzip") as sink:
        sink.write(os.urandom(3 << 20))
        raise RuntimeError("walk failed")
    with pytest.raises(InvalidArgument):
        sink.close()
    assert not any(t.name.startswith("layer-pipeline") for t in threading.enumerate())


class SlowOutput:
    """Blocks until released: shows how much the producer may run ahead."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.data = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.release.wait()
        self.data.write(data)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_memory_in_flight_is_bounded(compression: str) -> None:
    out = SlowOutput()
    sink = LayerSink(out, compression, threads=2)
    chunk = os.urandom(1 << 20)
    written = 0

    def produce() -> None:
        nonlocal written
        for _ in range(60):
            sink.write(chunk)
            written += 1

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(1.0)
    stuck_at = written
    out.release.set()
    t.join()
    result = sink.close()
    # the queue (8) + blocks being compressed + a pending block; never the whole layer
    assert stuck_at < 30, stuck_at
    assert result.uncompressed_size == 60 << 20
    assert result.digest == Digest.from_bytes(out.data.getvalue())


# ------------------------------------------------------------------ verified stream


@pytest.mark.parametrize("read_ahead", [0, 3])
@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_verified_stream_accepts_the_right_layer(compression: str, read_ahead: int) -> None:
    items = entries()
    result, blob = commit(items, compression)
    for hint in (compression, None):
        stream = verified_layer_stream(
            io.BytesIO(blob),
            hint,
            result.diff_id,
            expected_digest=result.digest,
            expected_size=result.size,
            read_ahead=read_ahead,
        )
        got = [(e, r.read()) for e, r in read_entries(stream)]
        assert got == items
        assert stream.verified and stream.diff_id == result.diff_id


@pytest.mark.parametrize("read_ahead", [0, 3])
@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_verified_stream_refuses_a_wrong_diff_id(compression: str, read_ahead: int) -> None:
    _, blob = commit(entries(), compression)
    wrong = Digest.from_bytes(b"something else")
    stream = verified_layer_stream(io.BytesIO(blob), compression, wrong, read_ahead=read_ahead)
    with pytest.raises(DigestMismatch, match="diff_id"):
        for _ in read_entries(stream):
            pass  # read_entries reads to EOF after the end blocks, which checks
    assert not stream.verified
    with pytest.raises(DigestMismatch):
        stream.read()  # and it stays refused


@pytest.mark.timeout(30)
def test_read_ahead_stops_on_close_and_reports_errors_in_order() -> None:
    result, blob = commit(entries(), "gzip")
    stream = verified_layer_stream(io.BytesIO(blob), "gzip", result.diff_id, read_ahead=2)
    assert stream.read(10) == plain_tar(entries())[:10]
    assert any(t.name == "layer-read-ahead" for t in threading.enumerate())
    stream.close()  # the thread is blocked on a full queue: close must free it
    deadline = time.monotonic() + 5
    while any(t.name == "layer-read-ahead" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "read-ahead thread did not stop"
        time.sleep(0.05)
    # a corrupt blob: the data before the damage arrives first, then the error
    bad = bytearray(blob)
    bad[len(bad) // 2 :] = bytes(len(bad) - len(bad) // 2)
    stream = verified_layer_stream(io.BytesIO(bytes(bad)), "gzip", result.diff_id, read_ahead=2)
    got = 0
    with pytest.raises(InvalidFormat):
        while chunk := stream.read(4096):
            got += len(chunk)
    assert got > 0


def test_verified_stream_checks_the_blob_digest_and_size() -> None:
    result, blob = commit(entries(), "gzip")
    # padding after the gzip member is refused by the decompressor, so change the digest
    stream = verified_layer_stream(
        io.BytesIO(blob), "gzip", result.diff_id, expected_digest=Digest.from_bytes(b"x")
    )
    with pytest.raises(DigestMismatch, match="blob"):
        stream.read()
    stream = verified_layer_stream(
        io.BytesIO(blob), "gzip", result.diff_id, expected_size=result.size + 1
    )
    with pytest.raises(SizeMismatch):
        stream.read()
    stream = verified_layer_stream(
        io.BytesIO(blob), "gzip", result.diff_id, expected_size=result.size - 1
    )
    with pytest.raises(SizeMismatch):
        stream.read()


def test_verified_stream_without_expected_diff_id_computes_it() -> None:
    result, blob = commit(entries(), "zstd")
    stream = verified_layer_stream(io.BytesIO(blob), None, None)
    buf = bytearray(1 << 16)
    while stream.readinto(buf):
        pass
    assert stream.diff_id == result.diff_id


def test_verified_stream_applies_limits() -> None:
    result, blob = commit(entries(), "gzip")
    stream = verified_layer_stream(
        io.BytesIO(blob), "gzip", result.diff_id, Limits(max_layer_bytes=1000)
    )
    with pytest.raises(LimitExceeded):
        stream.read()


def test_truncated_blob_never_verifies() -> None:
    result, blob = commit(entries(), "gzip")
    stream = verified_layer_stream(io.BytesIO(blob[: len(blob) // 2]), "gzip", result.diff_id)
    with pytest.raises(InvalidFormat, match="truncated"):
        for _ in read_entries(stream):
            pass
    assert not stream.verified


def test_pipeline_diff_id_covers_every_byte() -> None:
    # the diff_id is the sha256 of exactly the bytes a reader sees, end blocks included
    items = entries()
    result, blob = commit(items, "gzip")
    raw = open_decompressed(io.BytesIO(blob)).read()
    assert hashlib.sha256(raw).hexdigest() == result.diff_id.encoded
    assert raw.endswith(bytes(1024))


# ------------------------------------------------------------------ interop with Go


def _oci_layout(root: Path, blob: bytes, result: LayerResult) -> None:
    """A minimal OCI image layout (image-spec image-layout.md) holding one layer."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        d = Digest.from_bytes(data)
        (blobs / d.encoded).write_bytes(data)
        return {"digest": str(d), "size": len(data)}

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [str(result.diff_id)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, **put(config)},
            "layers": [{"mediaType": result.media_type, **put(blob)}],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                **put(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "t"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@pytest.mark.interop
def test_umoci_unpacks_our_gzip_layer(tmp_path: Path) -> None:
    # umoci (Go: compress/gzip, archive/tar) checks the blob digest and reads our gzip
    # and tar; Debian's umoci 0.4.7 has no zstd, which test_compression covers with zstd(1)
    deep = "d/" + "x" * 120 + "/" + "y" * 120
    items = [
        *entries(),
        (Entry("d", EntryType.DIR, mode=0o755), b""),
        (Entry(deep.rpartition("/")[0], EntryType.DIR, mode=0o700), b""),
        (Entry(deep, EntryType.FILE, mode=0o4755, size=5), b"deep\n"),
        (Entry("d/hard", EntryType.HARDLINK, linkname=deep), b""),
    ]
    result, blob = commit(items, "gzip")
    _oci_layout(tmp_path / "layout", blob, result)
    proc = subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:t", str(tmp_path / "bundle")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "etc" / "text").read_bytes() == items[2][1]
    assert (rootfs / "etc" / "random").read_bytes() == items[1][1]
    assert os.readlink(rootfs / "etc" / "link") == "text"
    assert (rootfs / deep).read_bytes() == b"deep\n"
    assert stat.S_IMODE((rootfs / deep).stat().st_mode) == 0o4755
    assert (rootfs / "d" / "hard").stat().st_ino == (rootfs / deep).stat().st_ino


_BIG_LAYER_SCRIPT = """
import io, sys
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.pipeline import LayerSink, verified_layer_stream
from lamina.layers.tar import TarWriter, read_entries

SIZE = int(sys.argv[1])

def peak_mb():
    # VmHWM, not ru_maxrss: ru_maxrss keeps the high-water mark of the process that
    # forked us (a pytest worker) across exec
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024

class Zeros:
    def __init__(self, n):
        self.left = n
    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n

class Keep:  # keeps the (small) compressed blob
    def __init__(self):
        self.parts = []
    def write(self, data):
        self.parts.append(data)

out = Keep()
with LayerSink(out, "zstd") as sink:
    w = TarWriter(sink)
    w.add(Entry("big", EntryType.FILE, size=SIZE), Zeros(SIZE))
    w.close()
    result = sink.close()
blob = b"".join(out.parts)
print(peak_mb())
zeros_ok = Limits(max_ratio=1 << 40)  # zeros compress far past the bomb ratio
stream = verified_layer_stream(io.BytesIO(blob), None, result.diff_id, zeros_ok, read_ahead=4)
buf = bytearray(1 << 20)
for entry, content in read_entries(stream):
    total = 0
    while n := content.readinto(buf):
        total += n
    assert total == SIZE
assert stream.verified
print(peak_mb())
"""


@pytest.mark.slow
def test_a_big_layer_streams_in_bounded_memory() -> None:
    size = 3 << 30  # 3 GiB through writer, hashing, zstd, decompression, reader
    proc = subprocess.run(
        [sys.executable, "-c", _BIG_LAYER_SCRIPT, str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    after_write, peak_mb = (int(x) for x in proc.stdout.split())
    assert peak_mb < 200, f"peak RSS {peak_mb} MB ({after_write} MB after writing)"
