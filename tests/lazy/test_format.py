"""The lazy format, pure: layers -> merged tree -> bootstrap bytes -> validated reader."""

from __future__ import annotations

import hashlib
import io

import pytest

from lamina.errors import DigestMismatch, InvalidFormat, LimitExceeded
from lamina.layers.api import Entry, EntryType
from lamina.lazy.format.chunks import decode_chunk
from lamina.lazy.format.decode import load_bootstrap
from lamina.lazy.format.encode import encode_bootstrap
from lamina.lazy.format.layout import InodeType
from lamina.lazy.format.merge import TreeBuilder
from lamina.lazy.format.packer import KnownChunks, Packer
from lamina.oci.digest import Digest

CHUNK = 64 << 10


def _build(layers, known=None):
    blob = io.BytesIO()
    packer = Packer({0: blob}, CHUNK, known)
    tree = TreeBuilder(packer, lambda _p: 0)
    for layer in layers:
        tree.begin_layer()
        for entry, data in layer:
            tree.add(entry, io.BytesIO(data))
    packer.finish()
    raw = blob.getvalue()
    if known is not None:  # chunks of an earlier build's blob: sizes checked there
        return None, raw, b"", packer
    data = encode_bootstrap(tree.root, CHUNK, lambda _k: (Digest.from_bytes(raw), len(raw)))
    return load_bootstrap(data), raw, data, packer


def _f(name, data=b"", **kw):
    return (Entry(name, EntryType.FILE, size=len(data), **kw), data)


def _d(name, **kw):
    return (Entry(name, EntryType.DIR, mode=0o755, **kw), b"")


def _read(boot, raw, path):
    inode = boot.resolve(path)
    out = b""
    for seg in boot.segments(inode):
        c = boot.chunk(seg.chunk)
        out += decode_chunk(raw[c.offset : c.offset + c.csize], c)[
            seg.offset : seg.offset + seg.length
        ]
    return out


def test_merge_whiteouts_opaque_hardlinks_and_content() -> None:
    big = bytes(range(256)) * 1000  # > one chunk
    layers = [
        [_d("a"), _f("a/x", b"x1"), _f("a/y", b"y1"), _d("b"), _f("b/z", b"z"), _f("big", big)],
        [
            _f("a/.wh.x"),
            _d("b"),
            _f("b/.wh..wh..opq"),
            _f("b/new", b"n", uid=7, xattrs={"user.k": b"v", "trusted.x": b"no"}),
            (Entry("hl", EntryType.HARDLINK, linkname="big"), b""),
            (Entry("s", EntryType.SYMLINK, mode=0o777, linkname="a/y"), b""),
        ],
    ]
    boot, raw, _, _ = _build(layers)
    paths = {p.decode() for p, _ in boot.walk()}
    assert paths == {"a", "a/y", "b", "b/new", "big", "hl", "s"}
    assert _read(boot, raw, "big") == big and _read(boot, raw, "a/y") == b"y1"
    assert boot.resolve("hl").index == boot.resolve("big").index
    assert boot.resolve("big").nlink == 2
    new = boot.resolve("b/new")
    assert new.uid == 7 and boot.xattrs(new) == {b"user.k": b"v"}
    assert boot.resolve("s").type is InodeType.SYMLINK and boot.resolve("s").link == b"a/y"
    assert boot.resolve("big").digest == hashlib.sha256(big).digest()


def test_small_files_share_a_chunk_and_dedup_across_builds() -> None:
    files = [_f(f"f{i}", f"content {i}".encode() * 10) for i in range(50)]
    boot, _, _, packer = _build([files])
    assert boot.n_chunks == 1
    _, _, _, second = _build([files], KnownChunks(packer.known.chunks, packer.known.files))
    assert second.stats.stored_chunks == 0 and second.stats.reused_chunks == 50


def test_encoding_is_deterministic() -> None:
    layers = [[_d("d"), _f("d/b", b"2"), _f("d/a", b"1")]]
    assert _build(layers)[2] == _build(layers)[2]


def test_corrupt_chunk_is_never_returned() -> None:
    boot, raw, _, _ = _build([[_f("f", b"hello" * 100)]])
    c = boot.chunk(0)
    bad = bytearray(raw[c.offset : c.offset + c.csize])
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(DigestMismatch):
        decode_chunk(bytes(bad), c)


def test_truncated_and_hostile_bootstraps() -> None:
    _, _, data, _ = _build([[_f("f", b"x")]])
    for cut in (0, 10, 64, len(data) - 1):
        with pytest.raises(InvalidFormat):
            load_bootstrap(data[:cut])
    flipped = bytearray(data)
    flipped[70] ^= 1
    with pytest.raises(InvalidFormat, match="checksum"):
        load_bootstrap(bytes(flipped))
    with pytest.raises(LimitExceeded):
        load_bootstrap(data, max_bytes=len(data) - 1)
    # a header claiming 2**32-1 inodes is refused by arithmetic, not by allocating
    from lamina.lazy.format import layout as lay

    fields = list(lay.HEADER.unpack_from(data, 0))
    fields[7] = 0xFFFFFFFF
    body = lay.HEADER.pack(*fields) + data[64:-32]
    with pytest.raises(InvalidFormat, match="add up"):
        load_bootstrap(body + hashlib.sha256(body).digest())
