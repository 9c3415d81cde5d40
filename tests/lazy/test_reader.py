"""The range reader over a real in-memory blob: ranges, merged requests, corruption."""

from __future__ import annotations

import asyncio
import io

import pytest

from lamina.errors import DigestMismatch
from lamina.layers.api import Entry, EntryType
from lamina.lazy.format.decode import load_bootstrap
from lamina.lazy.format.encode import encode_bootstrap
from lamina.lazy.format.merge import TreeBuilder
from lamina.lazy.format.packer import Packer
from lamina.lazy.reader import LazyReader
from lamina.oci.digest import Digest

CHUNK = 4096


class BytesFetcher:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.requests = 0

    async def fetch(self, blob: Digest, offset: int, length: int) -> bytes:
        self.requests += 1
        return self.raw[offset : offset + length]


def _image(data: bytes) -> tuple[object, bytes]:
    blob = io.BytesIO()
    packer = Packer({0: blob}, CHUNK)
    tree = TreeBuilder(packer, lambda _p: 0)
    tree.begin_layer()
    tree.add(Entry("f", EntryType.FILE, size=len(data)), io.BytesIO(data))
    packer.finish()
    raw = blob.getvalue()
    boot = load_bootstrap(
        encode_bootstrap(tree.root, CHUNK, lambda _k: (Digest.from_bytes(raw), len(raw)))
    )
    return boot, raw


def test_ranges_are_read_with_merged_requests() -> None:
    data = bytes(i % 251 for i in range(10 * CHUNK + 123))
    boot, raw = _image(data)
    fetcher = BytesFetcher(raw)
    reader = LazyReader(boot, fetcher)  # type: ignore[arg-type]
    inode = boot.resolve("f")  # type: ignore[attr-defined]
    assert asyncio.run(reader.read(inode)) == data
    assert fetcher.requests == 1  # eleven adjacent chunks, one request
    assert asyncio.run(reader.read(inode, 5000, 9000)) == data[5000:14000]


def test_corrupt_chunk_raises_and_returns_nothing() -> None:
    data = bytes(i % 7 for i in range(3 * CHUNK))
    boot, raw = _image(data)
    bad = bytearray(raw)
    bad[len(bad) // 2] ^= 0xFF
    reader = LazyReader(boot, BytesFetcher(bytes(bad)))  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch):
        asyncio.run(reader.read(boot.resolve("f")))  # type: ignore[attr-defined]
