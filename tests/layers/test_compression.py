"""Compression: detection, capped decompression (bombs, corrupt and truncated streams),
parallel deterministic gzip, zstd (lamina.layers.compression)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import zlib

import pytest
import zstandard

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsupported
from lamina.layers import compression as comp
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.compression import detect, make_compressor, open_decompressed
from lamina.layers.tar import TarWriter


class Trickle(io.RawIOBase):
    """Non-seekable, short reads: like a pipe or a socket."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def compress(
    kind: str,
    data: bytes,
    *,
    level: int | None = None,
    threads: int | None = None,
    step: int = 1 << 20,
) -> bytes:
    out = io.BytesIO()
    c = make_compressor(kind, out, level=level, threads=threads)
    for i in range(0, len(data), step):
        c.write(data[i : i + step])
    c.close()
    return out.getvalue()


DEFAULT = Limits()


def decompress_all(blob: bytes, kind: str | None = None, limits: Limits = DEFAULT) -> bytes:
    stream = open_decompressed(Trickle(blob, 7777), kind, limits)
    return stream.read()


def drain(stream: comp.DecompressedStream) -> int:
    buf = bytearray(1 << 20)
    total = 0
    while n := stream.readinto(buf):
        total += n
    return total


@pytest.fixture(scope="module")
def sample() -> bytes:
    """A small tar with text-like and random content: a realistic mix."""
    out = io.BytesIO()
    w = TarWriter(out)
    rnd = os.urandom(300_000)
    text = b"".join(b"line %d of some config file\n" % i for i in range(120_000))
    w.add_bytes(Entry("random", EntryType.FILE, size=len(rnd)), rnd)
    w.add_bytes(Entry("text", EntryType.FILE, size=len(text)), text)
    w.close()
    return out.getvalue()


# ------------------------------------------------------------------ detection


def test_detect(sample: bytes) -> None:
    assert detect(sample[:512]) == ""
    assert detect(gzip.compress(b"x")[:512]) == "gzip"
    assert detect(zstandard.ZstdCompressor().compress(b"x")) == "zstd"
    assert detect(b"\x50\x2a\x4d\x18" + bytes(8)) == "zstd"  # skippable frame first
    assert detect(b"") == ""
    assert detect(bytes(1024)) == ""  # an empty tar: end blocks only
    v7 = bytearray(sample[:512])
    v7[257:265] = bytes(8)
    v7[148:156] = b" " * 8
    v7[148:156] = b"%06o\0 " % sum(v7)
    assert detect(bytes(v7)) == ""


@pytest.mark.parametrize(
    ("head", "name"),
    [(b"BZh91AY&SY", "bzip2"), (b"\xfd7zXZ\x00\x00\x04", "xz"), (b"\x04\x22\x4d\x18", "lz4")],
)
def test_detect_refuses_other_compressions_by_name(head: bytes, name: str) -> None:
    with pytest.raises(Unsupported, match=name):
        detect(head + bytes(600))
    with pytest.raises(Unsupported, match=name):
        open_decompressed(io.BytesIO(head + bytes(600)))


@pytest.mark.interop
def test_real_bzip2_and_xz_are_refused(sample: bytes) -> None:
    for tool, name in (("bzip2", "bzip2"), ("xz", "xz")):
        blob = subprocess.run(
            [tool, "-c"], input=sample[:20_000], capture_output=True, check=True
        ).stdout
        with pytest.raises(Unsupported, match=name):
            open_decompressed(io.BytesIO(blob))


def test_detect_garbage() -> None:
    with pytest.raises(InvalidFormat, match="neither"):
        detect(os.urandom(512))
    with pytest.raises(InvalidFormat):
        open_decompressed(io.BytesIO(b"\x01" * 100))


def test_unknown_compression_names() -> None:
    with pytest.raises(Unsupported):
        make_compressor("brotli", io.BytesIO())
    with pytest.raises(Unsupported):
        open_decompressed(io.BytesIO(b""), "bzip2")
    assert comp.media_type_suffix("gzip") == "+gzip"
    assert comp.media_type_suffix("zstd") == "+zstd"
    assert comp.media_type_suffix("") == ""


# ------------------------------------------------------------------ gzip out


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
def test_gzip_round_trip_all_levels(sample: bytes, level: int) -> None:
    blob = compress("gzip", sample, level=level)
    assert gzip.decompress(blob) == sample
    assert zlib.decompress(blob, 31) == sample
    assert decompress_all(blob) == sample


def test_gzip_is_deterministic_across_threads_and_write_sizes(sample: bytes) -> None:
    data = sample * 3  # several 1 MiB blocks
    ref = compress("gzip", data, threads=1)
    assert compress("gzip", data, threads=2) == ref
    assert compress("gzip", data, threads=4, step=4097) == ref
    assert compress("gzip", data, threads=3, step=3 << 20) == ref
    # a fixed header: no name, no mtime, OS 255
    assert ref[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert int.from_bytes(ref[-4:], "little") == len(data)
    assert int.from_bytes(ref[-8:-4], "little") == zlib.crc32(data)


def test_gzip_of_nothing_is_valid() -> None:
    blob = compress("gzip", b"")
    assert gzip.decompress(blob) == b""
    assert decompress_all(blob, "gzip") == b""


def test_gzip_levels_are_validated() -> None:
    with pytest.raises(InvalidArgument):
        make_compressor("gzip", io.BytesIO(), level=10)


@pytest.mark.interop
def test_gnu_gzip_accepts_parallel_gzip(sample: bytes) -> None:
    data = sample * 4
    blob = compress("gzip", data, threads=2)
    subprocess.run(["gzip", "-t"], input=blob, check=True)
    out = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()


# ------------------------------------------------------------------ gzip in


def test_gzip_multi_member(sample: bytes) -> None:
    blob = gzip.compress(sample[:1000]) + gzip.compress(sample[1000:])
    assert decompress_all(blob) == sample


@pytest.mark.parametrize("tail", [b"garbage", b"\0" * 8, b"\x1f"])
def test_gzip_trailing_garbage(sample: bytes, tail: bytes) -> None:
    blob = gzip.compress(sample) + tail
    with pytest.raises(InvalidFormat, match="gzip"):
        decompress_all(blob)


def test_gzip_bad_crc_and_size(sample: bytes) -> None:
    blob = bytearray(gzip.compress(sample))
    blob[-6] ^= 0x55  # CRC32
    with pytest.raises(InvalidFormat, match="corrupt gzip"):
        decompress_all(bytes(blob))
    blob = bytearray(gzip.compress(sample))
    blob[-2] ^= 0x55  # ISIZE
    with pytest.raises(InvalidFormat, match="corrupt gzip"):
        decompress_all(bytes(blob))


def test_gzip_corrupt_body(sample: bytes) -> None:
    blob = bytearray(gzip.compress(sample))
    for i in range(40, len(blob) - 40, 997):
        blob[i] ^= 0xFF
    with pytest.raises(InvalidFormat):
        decompress_all(bytes(blob))


@pytest.mark.parametrize("cut", [1, 5, 11, 100, -9, -1])
def test_gzip_truncated(sample: bytes, cut: int) -> None:
    blob = gzip.compress(sample)
    with pytest.raises(InvalidFormat):
        decompress_all(blob[:cut], "gzip")


def test_gzip_empty_stream() -> None:
    with pytest.raises(InvalidFormat, match="empty gzip"):
        decompress_all(b"", "gzip")


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    # 80 MiB of zeros in 80 KB: deflate's best ratio (~1030:1) passes the 1000:1 cap
    return zlib.compress(bytes(80 << 20), 9, wbits=31)


def test_gzip_bomb_stopped_by_ratio(gzip_bomb: bytes) -> None:
    stream = open_decompressed(io.BytesIO(gzip_bomb), None)
    with pytest.raises(LimitExceeded, match="decompression bomb"):
        drain(stream)
    # stopped as soon as the output passed 1000 x the input, before the end of the bomb
    assert stream.decompressed_bytes <= 1000 * len(gzip_bomb) + comp.CHUNK
    assert stream.decompressed_bytes < 80 << 20


def test_gzip_bomb_stopped_by_size_cap() -> None:
    blob = zlib.compress(bytes(8 << 20), 1, wbits=31)
    stream = open_decompressed(io.BytesIO(blob), "gzip", Limits(max_layer_bytes=3 << 20))
    with pytest.raises(LimitExceeded, match="over 3145728 bytes"):
        drain(stream)
    assert stream.decompressed_bytes <= (3 << 20) + comp.CHUNK


def test_gzip_output_is_bounded_per_read(gzip_bomb: bytes) -> None:
    # with the ratio cap out of the way, each step still yields at most one chunk
    stream = open_decompressed(io.BytesIO(gzip_bomb), "gzip", Limits(max_ratio=10**6))
    assert len(stream.read(10 << 20)) <= comp.CHUNK
    assert stream.compressed_bytes <= 2 * comp.CHUNK


# ------------------------------------------------------------------ zstd


def test_zstd_round_trip_and_determinism(sample: bytes) -> None:
    data = sample * 6
    blob = compress("zstd", data)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == data
    assert decompress_all(blob) == data
    assert compress("zstd", data, threads=1) == blob
    assert compress("zstd", data, threads=4, step=5000) == blob


@pytest.mark.interop
def test_zstd_cli_interop(sample: bytes) -> None:
    blob = compress("zstd", sample)
    out = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
    assert out == sample
    for args in (["-3"], ["-19", "--long=27"], ["-1", "--no-check"]):
        theirs = subprocess.run(
            ["zstd", "-c", *args], input=sample[:300_000], capture_output=True, check=True
        ).stdout
        assert decompress_all(theirs) == sample[:300_000]


def test_zstd_multi_frame_and_skippable(sample: bytes) -> None:
    c = zstandard.ZstdCompressor()
    skippable = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    blob = skippable + c.compress(sample[:5000]) + skippable + c.compress(sample[5000:])
    assert decompress_all(blob) == sample


def test_zstd_truncated(sample: bytes) -> None:
    blob = compress("zstd", sample)
    for cut in (3, 4, 6, 20, len(blob) // 2, len(blob) - 4, len(blob) - 1):
        with pytest.raises(InvalidFormat, match=r"truncated|corrupt"):
            decompress_all(blob[:cut], "zstd")


def test_zstd_trailing_garbage_and_corruption(sample: bytes) -> None:
    blob = compress("zstd", sample)
    for tail in (b"garbage!", bytes(8), b"\x28"):
        with pytest.raises(InvalidFormat):
            decompress_all(blob + tail)
    bad = bytearray(blob)
    bad[-2] ^= 0xFF  # the content checksum
    with pytest.raises(InvalidFormat, match="corrupt zstd"):
        decompress_all(bytes(bad))
    with pytest.raises(InvalidFormat, match="empty zstd"):
        decompress_all(b"", "zstd")


def test_zstd_bomb_stopped_by_ratio() -> None:
    blob = zstandard.ZstdCompressor(level=1).compress(bytes(256 << 20))
    assert len(blob) < 64 << 10
    stream = open_decompressed(io.BytesIO(blob), None)
    with pytest.raises(LimitExceeded, match="decompression bomb"):
        drain(stream)
    assert stream.decompressed_bytes <= comp.RATIO_FLOOR + comp.CHUNK


def test_zstd_bomb_stopped_by_size_cap() -> None:
    blob = zstandard.ZstdCompressor(level=1).compress(bytes(16 << 20))
    stream = open_decompressed(io.BytesIO(blob), "zstd", Limits(max_layer_bytes=1 << 20))
    with pytest.raises(LimitExceeded):
        drain(stream)


def _big_window_frame(window_log: int) -> bytes:
    params = zstandard.ZstdCompressionParameters(window_log=window_log, enable_ldm=True)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return cobj.compress(b"payload " * 1000) + cobj.flush()


def test_zstd_window_over_the_limit_is_refused() -> None:
    blob = _big_window_frame(28)  # 256 MiB window in the frame header, content size unknown
    with pytest.raises(LimitExceeded, match="window"):
        decompress_all(blob)
    assert decompress_all(blob, limits=Limits(zstd_max_window_log=28)) == b"payload " * 1000
    # a level-3 stream of unknown size has a 2 MiB window: refused under 2^20
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    level3 = cobj.compress(os.urandom(4 << 20)) + cobj.flush()
    with pytest.raises(LimitExceeded, match="window"):
        decompress_all(level3, limits=Limits(zstd_max_window_log=20))
    # a one-shot frame declares its size: the window is the content size
    one_shot = zstandard.ZstdCompressor(level=3).compress(os.urandom(100_000))
    assert len(decompress_all(one_shot, limits=Limits(zstd_max_window_log=17))) == 100_000
    with pytest.raises(LimitExceeded, match="window"):
        decompress_all(one_shot, limits=Limits(zstd_max_window_log=16))


# ------------------------------------------------------------------ plain and streams


def test_plain_tar_passthrough(sample: bytes) -> None:
    assert decompress_all(sample) == sample
    assert decompress_all(sample, "") == sample
    with pytest.raises(LimitExceeded):
        decompress_all(sample, "", Limits(max_layer_bytes=len(sample) - 1))


def test_detection_on_a_pipe(sample: bytes) -> None:
    for kind in ("gzip", "zstd"):
        blob = compress(kind, sample)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            with os.fdopen(w, "wb") as out:
                out.write(blob)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb", buffering=0) as stream:
            d = open_decompressed(stream)
            assert d.kind == kind
            assert d.read() == sample
        os.waitpid(pid, 0)


def test_read_and_readinto_mix(sample: bytes) -> None:
    d = open_decompressed(io.BytesIO(compress("gzip", sample)))
    head = d.read(100)
    buf = bytearray(5000)
    n = d.readinto(buf)
    rest = d.read()
    assert head + bytes(buf[:n]) + rest == sample
    assert d.read() == b"" and d.readinto(buf) == 0
    assert d.decompressed_bytes == len(sample)


@pytest.mark.interop
def test_pigz_interop(sample: bytes) -> None:
    data = sample * 3
    theirs = subprocess.run(
        ["pigz", "-c", "-p", "2", "-b", "128"], input=data, capture_output=True, check=True
    ).stdout
    assert decompress_all(theirs) == data
    ours = compress("gzip", data, threads=2)
    subprocess.run(["pigz", "-t"], input=ours, check=True)
