"""Plain image in the store -> lazy image in the store (bootstrap, data blobs, and an
artifact manifest whose ``subject`` is the plain image), streaming: layers are read as
tar streams and chunks are written into store ingests as they are made.

Data blob slot 0 holds the prefetch-list files' chunks (listed first in the manifest,
so one request fetches them all), slot 1 the rest; an empty slot is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.image.images import Image
from lamina.image.layer_io import open_layer
from lamina.layers.tar import read_entries
from lamina.lazy.format.decode import load_bootstrap
from lamina.lazy.format.encode import encode_bootstrap
from lamina.lazy.format.layout import DEFAULT_CHUNK_SIZE
from lamina.lazy.format.merge import TreeBuilder
from lamina.lazy.format.model import BlobKey
from lamina.lazy.format.packer import KnownChunks, Packer, PackStats
from lamina.oci.artifact import new_artifact
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store.api import Store

ARTIFACT_TYPE = "application/vnd.lamina.lazy.v1"
BOOTSTRAP_TYPE = "application/vnd.lamina.lazy.bootstrap.v1"
BLOB_TYPE = "application/vnd.lamina.lazy.blob.v1+zstd"
PREFETCH, MAIN = 0, 1


@dataclass(frozen=True, slots=True)
class Converted:
    manifest: Descriptor
    bootstrap: Descriptor
    blobs: tuple[Descriptor, ...]
    stats: PackStats


def convert_image(
    store: Store,
    image: Image,
    *,
    prefetch: frozenset[str] = frozenset(),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    known: KnownChunks | None = None,
) -> Converted:
    """Call inside ``store.lease()`` until the manifest is named by a ref."""
    writers = {PREFETCH: store.writer(), MAIN: store.writer()}
    try:
        packer = Packer(dict(writers), chunk_size, known)
        tree = TreeBuilder(packer, lambda p: PREFETCH if p in prefetch else MAIN, prefetch)
        for layer, diff_id in zip(image.manifest.layers, image.config.diff_ids, strict=True):
            tree.begin_layer()
            with open_layer(store, layer, diff_id) as stream:
                for entry, reader in read_entries(stream):
                    tree.add(entry, reader)
        packer.finish()
        new: dict[int, tuple[Digest, int]] = {}
        for slot, writer in writers.items():
            if writer.size:
                info = writer.commit()
                new[slot] = (info.digest, info.size)
            else:
                writer.abort()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise

    def resolve(key: BlobKey) -> tuple[Digest, int]:
        if isinstance(key, int):
            return new[key]
        return key, store.info(key).size

    data = encode_bootstrap(tree.root, chunk_size, resolve)
    info = store.put_bytes(data)
    boot = Descriptor(BOOTSTRAP_TYPE, info.digest, info.size)
    # every blob the bootstrap names (reused ones of earlier images too): new ones
    # first, the prefetch blob first of all
    order = {digest: slot for slot, (digest, _) in new.items()}
    blobs = [Descriptor(BLOB_TYPE, b.digest, b.size) for b in load_bootstrap(data).blobs()]
    blobs.sort(key=lambda d: order.get(d.digest, len(order)))
    subject = Descriptor(
        image.manifest_descriptor.media_type,
        image.manifest_descriptor.digest,
        image.manifest_descriptor.size,
    )
    manifest = new_artifact(
        ARTIFACT_TYPE,
        [boot, *blobs],
        config=image.manifest.config,
        subject=subject,
        annotations={"io.lamina.lazy.chunk-size": str(chunk_size)},
    )
    raw = manifest.to_bytes()
    store.put_bytes(raw)
    return Converted(manifest.to_descriptor(), boot, tuple(blobs), packer.stats)
