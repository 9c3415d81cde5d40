"""``lamina commit``: a container's overlay upper dir becomes a new layer on its image.

Like ``docker commit``: the base image's layers, plus one layer made from the upper dir
(whiteouts included), a config inheriting the base's with ``--change`` applied, and a
history entry saying what made it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lamina.dockerfile.config_changes import apply_changes
from lamina.image.images import Image
from lamina.image.importer import build_image, rfc3339
from lamina.image.layer_io import write_layer
from lamina.layers.diff import diff_overlay_upper
from lamina.layers.tar import TarWriter
from lamina.oci import mediatypes as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store.api import Store


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The image a commit made: its manifest, ID and new layer."""

    manifest: Descriptor
    image_id: Digest
    layer: Descriptor
    diff_id: Digest


def commit_upper(
    store: Store,
    base: Image,
    upper: str,
    name: str | None,
    *,
    created_by: str = "",
    comment: str | None = None,
    author: str | None = None,
    changes: Sequence[str] = (),
    compression: str = "gzip",
    source_date_epoch: int | None = None,
) -> CommitResult:
    created = rfc3339(source_date_epoch if source_date_epoch is not None else time.time())
    clamp_ns = source_date_epoch * 1_000_000_000 if source_date_epoch is not None else None
    config = apply_changes(base.config, changes)

    def produce(writer: TarWriter) -> None:
        diff_overlay_upper(Path(upper), writer, clamp_mtime_ns=clamp_ns)

    with store.lease():
        layer = write_layer(store, produce, compression)
        history = History(created=created, created_by=created_by, author=author, comment=comment)
        config = replace(config.with_layer(layer.diff_id, history), created=created)
        if author is not None:
            config = replace(config, author=author)
        # A Docker-typed base keeps working: its layers are retyped to their OCI twins
        # (the bytes are the same) since the new manifest is an OCI one.
        base_layers = [replace(d, media_type=_oci_layer_type(d)) for d in base.manifest.layers]
        manifest, image_id = build_image(store, [*base_layers, layer.descriptor], config, name)
    return CommitResult(manifest, image_id, layer.descriptor, layer.diff_id)


def _oci_layer_type(d: Descriptor) -> str:
    compression = mt.LAYER_COMPRESSION.get(d.media_type)
    if compression is None or d.media_type.startswith("application/vnd.oci."):
        return d.media_type
    return mt.OCI_LAYER_BY_COMPRESSION[compression]
