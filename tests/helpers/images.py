"""Test images: a busybox base made from the host's busybox-static, and random images.

Both go through lamina's real code paths (the importer and the layer writer), so the
images are exactly what users get.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.image.importer import build_image, import_rootfs
from lamina.image.layer_io import LayerWritten, write_layer
from lamina.layers.api import Entry, EntryType
from lamina.layers.tar import TarWriter
from lamina.oci.config import History, ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.platform import Platform
from lamina.store.api import Store

EPOCH = 1_700_000_000


def import_busybox(
    store: Store, rootfs: str, name: str = "docker.io/library/busybox:latest"
) -> Descriptor:
    """Import a busybox rootfs (lamina.image.bootstrap.busybox) as an image; return its manifest."""
    return import_rootfs(
        store, rootfs, name, changes=['CMD ["sh"]'], source_date_epoch=EPOCH
    ).manifest


@dataclass(frozen=True)
class RandomImage:
    descriptor: Descriptor
    layers: tuple[LayerWritten, ...]
    # path -> bytes (files) / None (dirs) / "->target" (symlinks), the merged result
    expected: dict[str, bytes | str | None]


def _random_name(rng: random.Random) -> str:
    return (
        "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-.") for _ in range(rng.randint(1, 12))
        ).strip(".")
        or "x"
    )


def make_random_image(
    store: Store,
    name: str,
    *,
    seed: int = 0,
    layers: int = 3,
    files_per_layer: int = 20,
    max_file_size: int = 4096,
    compression: str = "gzip",
) -> RandomImage:
    """An image of ``layers`` random layers; later layers overwrite and white out
    earlier paths. ``expected`` is the tree an unpack must give (contents only)."""
    rng = random.Random(seed)
    merged: dict[str, bytes | str | None] = {}
    written: list[LayerWritten] = []
    config = ImageConfig.new(Platform.host(), created="2023-11-14T22:13:20Z")
    for index in range(layers):
        entries: dict[str, tuple[Entry, bytes]] = {}
        dirs = [p for p, v in merged.items() if v is None] + [""]
        # whiteouts of earlier paths (not in the first layer)
        if index and merged:
            for victim in rng.sample(sorted(merged), k=min(3, len(merged))):
                if any(victim.startswith(e + "/") or e == victim for e in entries):
                    continue
                parent, _, base = victim.rpartition("/")
                wh = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
                entries[wh] = (Entry(wh, EntryType.FILE, mode=0o644), b"")
                for key in [k for k in merged if k == victim or k.startswith(victim + "/")]:
                    del merged[key]
                dirs = [p for p, v in merged.items() if v is None] + [""]
        for _ in range(files_per_layer):
            parent = rng.choice(dirs)
            if parent and parent not in merged:
                continue
            path = f"{parent}/{_random_name(rng)}" if parent else _random_name(rng)
            if (
                path.rpartition("/")[2].startswith(".wh.")
                or path in entries
                or merged.get(path, b"") is None
            ):
                continue
            kind = rng.random()
            if kind < 0.2:
                entries[path] = (Entry(path, EntryType.DIR, mode=0o755), b"")
                merged[path] = None
                dirs.append(path)
            elif kind < 0.3:
                target = _random_name(rng)
                entries[path] = (Entry(path, EntryType.SYMLINK, mode=0o777, linkname=target), b"")
                merged[path] = "->" + target
            else:
                data = rng.randbytes(rng.randint(0, max_file_size))
                entries[path] = (Entry(path, EntryType.FILE, mode=0o644, size=len(data)), data)
                merged[path] = data
        # parents of new entries must exist in this layer or below
        ordered = sorted(entries.items())

        def produce(
            writer: TarWriter, ordered: Sequence[tuple[str, tuple[Entry, bytes]]] = ordered
        ) -> None:
            for _, (entry, data) in ordered:
                writer.add_bytes(entry, data)

        layer = write_layer(store, produce, compression)
        written.append(layer)
        config = config.with_layer(
            layer.diff_id, History(created="2023-11-14T22:13:20Z", created_by=f"layer {index}")
        )
    with store.lease():
        descriptor, _ = build_image(store, [w.descriptor for w in written], config, name)
    return RandomImage(descriptor, tuple(written), merged)


def tree_contents(root: str) -> dict[str, bytes | str | None]:
    """The same shape as RandomImage.expected, read from a directory."""
    out: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = "->" + os.readlink(full)
                dirnames.remove(d)
            else:
                out[rel] = None
        for f in filenames:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = "->" + os.readlink(full)
            else:
                with open(full, "rb") as fh:
                    out[rel] = fh.read()
    return out
