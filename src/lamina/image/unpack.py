"""``lamina unpack``: an image's layers applied in order into a plain directory."""

from __future__ import annotations

import os
from collections.abc import Callable

from lamina.errors import AlreadyExists, InvalidFormat
from lamina.image.images import Image
from lamina.image.layer_io import open_layer
from lamina.layers.api import DEFAULT_LIMITS, LayerStats, Limits
from lamina.layers.apply import apply_layer
from lamina.store.api import Store

Progress = Callable[..., None]


def unpack_image(
    store: Store,
    image: Image,
    dest: str,
    *,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> LayerStats:
    """Apply every layer of ``image`` into ``dest`` (created if missing, must be empty).

    Each layer is verified (digest and diff_id) as it streams; a bad layer stops the
    unpack with an error and ``dest`` is left partial, never anything outside it.
    """
    layers = image.manifest.layers
    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(layers):
        raise InvalidFormat(
            f"image {image.id} has {len(layers)} layers but {len(diff_ids)} diff_ids in its config"
        )
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest):
            raise AlreadyExists(
                f"{dest} exists and is not an empty directory", hint="give a new or empty directory"
            )
    else:
        os.makedirs(dest, mode=0o755)
    entries = files = size = whiteouts = 0
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        stream = open_layer(store, layer, diff_id, limits)
        try:
            stats = apply_layer(stream, dest, mode="tree", limits=limits)
        finally:
            stream.close()
        entries += stats.entries
        files += stats.files
        size += stats.bytes
        whiteouts += stats.whiteouts
        if progress is not None:
            progress(layer.size)
    return LayerStats(entries=entries, files=files, bytes=size, whiteouts=whiteouts)
