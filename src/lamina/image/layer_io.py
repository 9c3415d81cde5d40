"""Layers between the store and the filesystem: write a layer blob, open one for applying.

The glue of rows 2: ``layers`` makes and reads tar streams, ``store`` keeps blobs, and
neither imports the other. Writing is one pass: the tar bytes are hashed (diff_id),
compressed and hashed again (digest) on their way into a store ingest, so a layer is
never staged on disk or in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamina.layers.api import DEFAULT_LIMITS, Limits
from lamina.layers.pipeline import LayerSink, VerifiedLayerStream, verified_layer_stream
from lamina.layers.tar import TarWriter
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store.api import BlobWriter, Store

Progress = Callable[..., None]


@dataclass(frozen=True, slots=True)
class LayerWritten:
    """A layer blob written to the store, with its diff_id."""

    descriptor: Descriptor
    diff_id: Digest
    uncompressed_size: int


class _Counting:
    """Forwards writes to the store's ingest and reports progress."""

    def __init__(self, out: BlobWriter, progress: Progress | None) -> None:
        self._write = out.write
        self._progress = progress

    def write(self, data: bytes | memoryview) -> int:
        self._write(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)


def write_layer(
    store: Store,
    produce: Callable[[TarWriter], None],
    compression: str = "gzip",
    progress: Progress | None = None,
) -> LayerWritten:
    """Run ``produce`` on a TarWriter whose bytes become one layer blob in the store.

    Call inside ``store.lease()`` until the blob is named by a manifest and a ref.
    """
    with store.writer() as blob:
        sink = LayerSink(_Counting(blob, progress), compression)
        try:
            writer = TarWriter(sink)
            produce(writer)
            writer.close()
        except BaseException:
            sink.abort()
            raise
        result = sink.close()
        info = blob.commit(result.digest, result.size)
    media_type = mt.OCI_LAYER_BY_COMPRESSION[compression]
    return LayerWritten(
        Descriptor(media_type, info.digest, info.size), result.diff_id, result.uncompressed_size
    )


def open_layer(
    store: Store,
    layer: Descriptor,
    diff_id: Digest | None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedLayerStream:
    """The uncompressed tar stream of a stored layer.

    The blob is verified against its descriptor and the tar against ``diff_id`` as they
    stream; the final read raises DigestMismatch if either is wrong.
    """
    compression = mt.LAYER_COMPRESSION.get(layer.media_type)
    blob = store.open_blob(layer.digest, layer.size)
    # read_ahead: decompression runs on its own thread, overlapping the applier's writes
    return verified_layer_stream(blob, compression, diff_id, limits, read_ahead=8)
