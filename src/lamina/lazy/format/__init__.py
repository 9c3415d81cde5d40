"""The lazy image format, pure (bytes and values in, bytes and values out):

- ``layout``: the bootstrap's byte layout v1 (constants, record structs);
- ``model``: the mutable tree and chunk references a conversion builds;
- ``merge``: layers (tar entries in order) -> the merged tree overlayfs would show;
- ``packer``: file contents -> deduplicated, batched, zstd-compressed chunks;
- ``chunks``: one chunk's encoding and its verified decoding;
- ``encode`` / ``decode``: the tree <-> bootstrap bytes (validated, capped on load).
"""

__all__ = ["chunks", "decode", "encode", "layout", "merge", "model", "packer"]
