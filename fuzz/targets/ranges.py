"""``Range`` of a blob GET and ``Content-Range`` of an upload PATCH.

Input lines: a size (also the upload's offset), a Range header, a Content-Range
header, a Content-Length.
"""

from __future__ import annotations

from dataclasses import replace

from fuzz.harness import tolerant
from lamina.oci.digest import Digest
from lamina.registry.protocol import blob_answer
from lamina.registry.ranges import parse_range
from lamina.registry.upload_state import apply_patch, new_session

_DIGEST = Digest("sha256", "0" * 64)


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def one_input(data: bytes) -> None:
    lines = data.decode("utf-8", "replace").split("\n")
    lines += [""] * (4 - len(lines))
    size = _int(lines[0]) or 0
    header = lines[1] or None
    got = tolerant(parse_range, header, size)
    if got is not None:
        start, end = got
        assert 0 <= start <= end < size, (header, size, got)
    answer = tolerant(blob_answer, _DIGEST, size, header)
    if answer is not None:
        assert 0 <= answer.length <= size, (header, size, answer)
    session = replace(new_session("a/b", "u", 0.0), offset=size)
    reached = apply_patch(session, lines[2] or None, _int(lines[3]))
    assert reached is None or reached >= size
