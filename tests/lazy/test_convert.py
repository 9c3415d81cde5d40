"""convert_image on a real stored image: bootstrap + blobs in the store, subject set,
tree read back through the reader equal to lamina unpack."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.images import make_random_image, tree_contents
from lamina.image.images import resolve
from lamina.image.unpack import unpack_image
from lamina.lazy.convert import ARTIFACT_TYPE, convert_image
from lamina.lazy.format.decode import load_bootstrap
from lamina.lazy.format.layout import InodeType
from lamina.lazy.reader import LazyReader
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest
from lamina.store.local import LocalStore


class StoreFetcher:
    def __init__(self, store: LocalStore) -> None:
        self.store = store

    async def fetch(self, blob: Digest, offset: int, length: int) -> bytes:
        with open(self.store.blob_path(blob), "rb") as f:
            f.seek(offset)
            return f.read(length)


def test_convert_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    make_random_image(store, "docker.io/library/r:1", seed=3, layers=3, max_file_size=200_000)
    image = resolve(store, "r:1")
    unpack_image(store, image, str(tmp_path / "tree"))
    with store.lease():
        out = convert_image(store, image, chunk_size=64 << 10)
        store.set_ref("docker.io/library/r:lazy", out.manifest)
    manifest = Manifest.parse(store.read_blob(out.manifest.digest))
    assert manifest.artifact_type == ARTIFACT_TYPE
    assert (
        manifest.subject is not None and manifest.subject.digest == image.manifest_descriptor.digest
    )
    boot = load_bootstrap(store.read_blob(out.bootstrap.digest))
    reader = LazyReader(boot, StoreFetcher(store))
    got: dict[str, bytes | str | None] = {}
    for path, index in boot.walk():
        inode = boot.inode(index)
        if inode.type is InodeType.DIR:
            got[path.decode()] = None
        elif inode.type is InodeType.SYMLINK:
            got[path.decode()] = "->" + inode.link.decode()
        else:
            got[path.decode()] = asyncio.run(reader.read(inode))
    assert got == tree_contents(str(tmp_path / "tree"))
