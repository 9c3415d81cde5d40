"""How blob bodies reach the store: a registry (a small aiohttp app on loopback) that
sends every blob with chunked transfer encoding in pieces of uneven sizes, so pieces
straddle the client's 1 MiB buffers in every way; and one that corrupts a byte past the
first megabyte. Whatever the piece sizes, every byte must be hashed and written once,
in order (the store's commit checks digest and size)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from helpers.images import make_random_image
from lamina.errors import DigestMismatch
from lamina.image.api import NoProgress
from lamina.image.transfer.pull import PullResult, pull_image
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.registry.client.remote import RegistryClient
from lamina.registry.client.transport import Transport
from lamina.store.local import LocalStore

NAME = "docker.io/library/chunky:1"


@asynccontextmanager
async def _registry(source: LocalStore, *, flip_at: int | None = None) -> AsyncIterator[str]:
    top = source.get_ref(NAME)
    rng = random.Random(7)

    async def manifest(request: web.Request) -> web.Response:
        return web.Response(
            body=source.read_blob(top.digest),
            headers={"Content-Type": top.media_type, "Docker-Content-Digest": str(top.digest)},
        )

    async def blob(request: web.Request) -> web.StreamResponse:
        digest = Digest.parse(request.match_info["digest"])
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        with source.open_blob(digest) as reader:
            while True:
                # 1 byte to 3 MiB: pieces smaller and larger than the client's buffer
                piece = reader.read(rng.choice((1, 4095, 65536, 300_001, 1 << 20, 3 << 20)))
                if not piece:
                    break
                if flip_at is not None and sent <= flip_at < sent + len(piece):
                    at = flip_at - sent
                    piece = piece[:at] + bytes([piece[at] ^ 1]) + piece[at + 1 :]
                sent += len(piece)
                await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()

    async def base(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _pull(source: LocalStore, dest: Path, *, flip_at: int | None = None) -> PullResult:
    async def go() -> PullResult:
        async with (
            _registry(source, flip_at=flip_at) as host,
            RegistryClient(Transport(lambda r: None)) as client,
        ):
            ref = Reference.parse(f"{host}/chunky/app:1")
            return await pull_image(client, LocalStore(dest), ref, progress=NoProgress())

    return asyncio.run(go())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("chunky-src"))
    make_random_image(
        store, NAME, seed=71, layers=2, files_per_layer=40, max_file_size=200_000, compression=""
    )
    return store


def test_uneven_chunked_pieces_arrive_whole(source: LocalStore, tmp_path: Path) -> None:
    result = _pull(source, tmp_path / "dest")
    assert result.fetched == 3
    assert max(b.size for b in result.blobs) > 5 << 19  # several buffers' worth
    dest = LocalStore(tmp_path / "dest")
    for blob in result.blobs:
        assert dest.info(blob.digest).size == blob.size
        with dest.open_blob(blob.digest, blob.size) as reader:  # re-hashes on read
            while reader.read(1 << 20):
                pass


def test_a_flipped_byte_past_the_first_buffer_is_refused(
    source: LocalStore, tmp_path: Path
) -> None:
    with pytest.raises(DigestMismatch):
        _pull(source, tmp_path / "dest", flip_at=(1 << 20) + 12345)
    dest = LocalStore(tmp_path / "dest")
    assert dest.list_refs() == {}
