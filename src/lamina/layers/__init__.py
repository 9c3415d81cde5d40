"""Layers: OCI changesets as tar streams, made from trees and applied onto them (row 2).

A layer (image-spec layer.md) is a tar stream, optionally compressed, whose entries add
or replace paths and whose whiteouts delete paths of the layers below. The package, by
concern::

    lamina/layers/
    ├── api.py             values: Entry, EntryType, Limits, LayerStats, whiteout and
    │                      overlay xattr names (no I/O)
    ├── chunked_reader.py  ChunkedReader: read()/readinto() over chunks a subclass makes
    ├── tar/               the tar format, no filesystem
    │   ├── blocks.py      block layout: sizes, magics, type flags, padding, name codec
    │   ├── decode.py      header blocks, PAX records, member names -> Entry (hostile input)
    │   ├── encode.py      Entry -> ustar header, PAX when a field does not fit
    │   └── stream.py      read_entries (front to back, capped), TarWriter (deterministic)
    ├── compression/       layer blobs, no filesystem
    │   ├── detect.py      magic bytes -> "gzip" | "zstd" | "" (plain tar)
    │   ├── decompress.py  open_decompressed: gzip and zstd with the bomb caps
    │   └── compress.py    make_compressor: parallel deterministic gzip, zstd, none
    ├── pipeline.py        LayerSink: tar -> blob with diff_id and digest in one pass;
    │                      verified_layer_stream: blob -> tar, checked at EOF
    ├── fsops.py           the filesystem inside a root, through dir fds (openat2 or an
    │                      fd walk: never a symlink from an image followed to the host)
    ├── apply.py           apply_layer: a layer stream onto a directory or an overlay
    │                      upper dir (whiteouts, hardlinks, xattrs, devices)
    └── diff/              the reverse of apply
        ├── tree_reader.py TreeReader: a tree read through dir fds, in layer order
        ├── changeset.py   diff_trees, diff_overlay_upper: trees -> a layer stream
        └── upper_changes.py overlay_changes: docker diff's A/C/D list of a container

Rows inside the package (import-linter keeps them): ``api`` and ``chunked_reader`` at
the bottom; ``tar``; ``compression`` and ``fsops``; ``pipeline``, ``apply`` and
``diff`` on top, none of which imports another.

The names below are the public API. They are imported when first used, not here, so
that ``from lamina.layers import fsops`` (the runtime resolves a container's user with
it) pays for neither zstd nor ISA-L.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.layers.api import DEFAULT_LIMITS, Entry, EntryType, LayerStats, Limits, Readable
    from lamina.layers.apply import ApplyStats, apply_layer
    from lamina.layers.compression import make_compressor, open_decompressed
    from lamina.layers.diff import diff_overlay_upper, diff_trees, overlay_changes
    from lamina.layers.pipeline import (
        LayerResult,
        LayerSink,
        VerifiedLayerStream,
        verified_layer_stream,
    )
    from lamina.layers.tar import TarWriter, read_entries

_HOMES = {
    "DEFAULT_LIMITS": "lamina.layers.api",
    "Entry": "lamina.layers.api",
    "EntryType": "lamina.layers.api",
    "LayerStats": "lamina.layers.api",
    "Limits": "lamina.layers.api",
    "Readable": "lamina.layers.api",
    "ApplyStats": "lamina.layers.apply",
    "apply_layer": "lamina.layers.apply",
    "make_compressor": "lamina.layers.compression",
    "open_decompressed": "lamina.layers.compression",
    "diff_overlay_upper": "lamina.layers.diff",
    "diff_trees": "lamina.layers.diff",
    "overlay_changes": "lamina.layers.diff",
    "LayerResult": "lamina.layers.pipeline",
    "LayerSink": "lamina.layers.pipeline",
    "VerifiedLayerStream": "lamina.layers.pipeline",
    "verified_layer_stream": "lamina.layers.pipeline",
    "TarWriter": "lamina.layers.tar",
    "read_entries": "lamina.layers.tar",
}

__all__ = [
    "DEFAULT_LIMITS",
    "ApplyStats",
    "Entry",
    "EntryType",
    "LayerResult",
    "LayerSink",
    "LayerStats",
    "Limits",
    "Readable",
    "TarWriter",
    "VerifiedLayerStream",
    "apply_layer",
    "diff_overlay_upper",
    "diff_trees",
    "make_compressor",
    "open_decompressed",
    "overlay_changes",
    "read_entries",
    "verified_layer_stream",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
