"""``lamina import``: a root filesystem (a directory or a tarball) becomes a one-layer image.

Like ``docker import``: one layer holding the whole tree, a config for the host's
platform (or the one given), ``--change`` instructions applied to the config, and a
history entry that says where it came from. With ``SOURCE_DATE_EPOCH`` set, file mtimes
are clamped to it and every timestamp in the config is it, so the same tree gives the
same manifest digest byte for byte.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import BinaryIO

from lamina.dockerfile.config_changes import apply_changes
from lamina.errors import InvalidArgument, NotFound
from lamina.image.layer_io import write_layer
from lamina.layers.api import DEFAULT_LIMITS
from lamina.layers.compression import open_decompressed
from lamina.layers.diff import diff_trees
from lamina.layers.tar import TarWriter, read_entries
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import check_document_size
from lamina.oci.config import History, ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest
from lamina.oci.platform import Platform
from lamina.store.api import Store

Progress = Callable[..., None]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The image an import made."""

    name: str
    manifest: Descriptor
    image_id: Digest
    layer: Descriptor
    diff_id: Digest


def rfc3339(epoch: float) -> str:
    """UTC, seconds precision, ``Z`` suffix: the form Docker and BuildKit write."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tree_producer(source: str, clamp_ns: int | None) -> Callable[[TarWriter], None]:
    def produce(writer: TarWriter) -> None:
        diff_trees(None, source, writer, clamp_mtime_ns=clamp_ns)

    return produce


def _tar_producer(stream: BinaryIO, clamp_ns: int | None) -> Callable[[TarWriter], None]:
    # The tarball is re-written entry by entry through lamina's own reader, so a
    # malformed or hostile archive is refused here, before it becomes a layer.
    def produce(writer: TarWriter) -> None:
        for entry, content in read_entries(open_decompressed(stream, None, DEFAULT_LIMITS)):
            clamped = entry
            if clamp_ns is not None and entry.mtime_ns > clamp_ns:
                clamped = replace(entry, mtime_ns=clamp_ns)
            writer.add(clamped, content)

    return produce


def build_image(
    store: Store,
    layers: Sequence[Descriptor],
    config: ImageConfig,
    name: str | None,
) -> tuple[Descriptor, Digest]:
    """Store config and manifest for ``layers`` (descriptors, base first); tag as ``name``.
    Returns (manifest, id)."""
    config_bytes = config.to_bytes()
    check_document_size("config", len(config_bytes), f"image {name or '(unnamed)'}")
    config_info = store.put_bytes(config_bytes)
    manifest = Manifest(
        config=Descriptor(mt.OCI_CONFIG, config_info.digest, config_info.size),
        layers=tuple(layers),
    )
    data = manifest.to_bytes()
    check_document_size("manifest", len(data), f"image {name or '(unnamed)'}")
    info = store.put_bytes(data)
    descriptor = Descriptor(mt.OCI_MANIFEST, info.digest, info.size)
    if name is not None:
        store.set_ref(name, descriptor)
    return descriptor, config_info.digest


def import_rootfs(
    store: Store,
    source: str,
    name: str,
    *,
    changes: Sequence[str] = (),
    message: str | None = None,
    platform: Platform | None = None,
    compression: str = "gzip",
    source_date_epoch: int | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    clamp_ns = source_date_epoch * 1_000_000_000 if source_date_epoch is not None else None
    created = rfc3339(source_date_epoch if source_date_epoch is not None else time.time())
    label = "-" if source == "-" else os.path.basename(os.path.normpath(source))
    # Changes are checked before any work is done.
    config = ImageConfig.new(platform or Platform.host(), created=created)
    config = apply_changes(config, changes)

    with store.lease():
        if source == "-":
            layer = write_layer(
                store, _tar_producer(sys.stdin.buffer, clamp_ns), compression, progress
            )
        else:
            try:
                st = os.stat(source)
            except FileNotFoundError:
                raise NotFound(f"{source}: no such file or directory") from None
            if stat.S_ISDIR(st.st_mode):
                producer = _tree_producer(source, clamp_ns)
                layer = write_layer(store, producer, compression, progress)
            elif stat.S_ISREG(st.st_mode):
                with open(source, "rb") as f:
                    layer = write_layer(store, _tar_producer(f, clamp_ns), compression, progress)
            else:
                raise InvalidArgument(
                    f"{source} is neither a directory nor a tar file",
                    hint="give a rootfs directory or a .tar/.tar.gz/.tar.zst file",
                )
        history = History(
            created=created,
            created_by="",
            comment=message if message is not None else f"Imported from {label}",
        )
        config = config.with_layer(layer.diff_id, history)
        manifest, image_id = build_image(store, [layer.descriptor], config, name)
    return ImportResult(name, manifest, image_id, layer.descriptor, layer.diff_id)
