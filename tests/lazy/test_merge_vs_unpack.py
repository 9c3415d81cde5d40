"""The merged tree of real layers equals lamina's own unpack (contents and links)."""

from __future__ import annotations

import io
from pathlib import Path

from helpers.images import make_random_image, tree_contents
from lamina.image.images import resolve
from lamina.image.layer_io import open_layer
from lamina.image.unpack import unpack_image
from lamina.layers.tar import read_entries
from lamina.lazy.format.chunks import decode_chunk
from lamina.lazy.format.decode import load_bootstrap
from lamina.lazy.format.encode import encode_bootstrap
from lamina.lazy.format.layout import InodeType
from lamina.lazy.format.merge import TreeBuilder
from lamina.lazy.format.packer import Packer
from lamina.oci.digest import Digest
from lamina.store.local import LocalStore


def test_random_image_merges_like_unpack(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    make_random_image(store, "docker.io/library/r:1", seed=7, layers=4, files_per_layer=40)
    image = resolve(store, "r:1")
    unpack_image(store, image, str(tmp_path / "tree"))
    blob = io.BytesIO()
    packer = Packer({0: blob}, 4096)
    tree = TreeBuilder(packer, lambda _p: 0)
    for layer, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
        tree.begin_layer()
        with open_layer(store, layer, diff_id) as stream:
            for entry, reader in read_entries(stream):
                tree.add(entry, reader)
    packer.finish()
    raw = blob.getvalue()
    boot = load_bootstrap(
        encode_bootstrap(tree.root, 4096, lambda _k: (Digest.from_bytes(raw), len(raw)))
    )
    got: dict[str, bytes | str | None] = {}
    for path, index in boot.walk():
        inode = boot.inode(index)
        name = path.decode()
        if inode.type is InodeType.DIR:
            got[name] = None
        elif inode.type is InodeType.SYMLINK:
            got[name] = "->" + inode.link.decode()
        else:
            data = b""
            for seg in boot.segments(inode):
                c = boot.chunk(seg.chunk)
                data += decode_chunk(raw[c.offset : c.offset + c.csize], c)[
                    seg.offset : seg.offset + seg.length
                ]
            got[name] = data
    assert got == tree_contents(str(tmp_path / "tree"))
