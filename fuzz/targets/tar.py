"""The streaming tar reader: headers, PAX records, GNU long names, names and whiteouts."""

from __future__ import annotations

import io

from lamina.layers.api import Limits
from lamina.layers.tar import read_entries

# Small caps so the fuzzer reaches them; the code paths are the same as the defaults'.
_LIMITS = Limits(max_header_bytes=4096, max_entries=64, max_layer_bytes=1 << 20)


def one_input(data: bytes) -> None:
    for entry, reader in read_entries(io.BytesIO(data), _LIMITS):
        if entry.is_whiteout:
            # a whiteout names what it hides: the rest of its basename
            assert entry.basename.startswith(".wh.")
        if len(data) % 2:  # leave half the contents unread: the reader must skip them
            reader.read()
