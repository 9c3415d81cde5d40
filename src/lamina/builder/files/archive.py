"""ADD's local archives: recognised by content, extracted securely, no whiteouts.

Docker extracts a local ADD source that is a tar, plain or compressed, whatever its
name; anything else is copied as a file (Dockerfile reference, ADD). lamina recognises
plain tar, gzip, zstd, and also bzip2 and xz (official images ship ``rootfs.tar.xz``;
lamina refuses those compressions for *layers*, where the OCI spec does not allow them,
but a Dockerfile's ADD must take them). A compressed file is an archive only when what
it decompresses to starts with a valid tar header (``ADD notes.txt.gz /`` copies the
``.gz``).

Extraction is lamina's own layer applier (ARCHITECTURE.md §5, never ``tarfile``): names
are cleaned (a leading ``/`` dropped, so absolute names land inside the destination, as
Docker's chrooted untar does), ``..`` is refused, every parent is resolved inside the
destination directory (an archive's ``x -> /`` symlink followed by ``x/etc/passwd`` writes
``DEST/etc/passwd``, never the host's or the image's), files are made ``O_EXCL |
O_NOFOLLOW``, hardlinks must point into the destination, device nodes are skipped, and
decompression is capped (bombs stop with LimitExceeded). Owners come from the archive
(Docker keeps them) unless ``--chown`` is given (BuildKit applies it to extracted files);
``--chmod`` does not apply to extracted files.

Unlike a layer, an ADD archive has no whiteouts: a member named ``.wh.*`` is refused
(Unsafe). Extracting it as a plain file would turn it into a whiteout in the committed
layer, deleting files of the image below (and lamina's differ refuses such names).
"""

from __future__ import annotations

import bz2
import lzma
import os
from typing import BinaryIO

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsafe, Unsupported
from lamina.layers import compression
from lamina.layers.api import DEFAULT_LIMITS, Limits
from lamina.layers.apply import apply_layer
from lamina.layers.chunked_reader import ChunkedReader
from lamina.layers.tar import BLOCK_SIZE, ZERO_BLOCK, decode_header

CHUNK = 1 << 20
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def is_tar_header(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (ustar/GNU magic or a valid checksum)."""
    if len(block) < BLOCK_SIZE or block[:BLOCK_SIZE] == ZERO_BLOCK:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        decode_header(block[:BLOCK_SIZE])
    except InvalidArgument:
        return False
    return True


def compression_of(head: bytes) -> str | None:
    """``""``, ``gzip``, ``zstd``, ``bzip2`` or ``xz`` from a file's first bytes; None
    when it is not something ADD would extract."""
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789":
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    try:
        kind = compression.detect(head)
    except (Unsupported, InvalidFormat):
        return None
    if kind == "" and not is_tar_header(head):
        return None  # empty, zeros, or a v7-ish accident
    return kind


class _StdlibDecompressed(ChunkedReader):
    """bzip2/xz through the stdlib decoders, with lamina's caps on output and ratio."""

    __slots__ = ("_dec", "_in_bytes", "_limits", "_out_bytes", "_stream")

    def __init__(self, stream: BinaryIO, kind: str, limits: Limits) -> None:
        super().__init__()
        self._stream = stream
        self._dec: bz2.BZ2Decompressor | lzma.LZMADecompressor = (
            bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
        )
        self._limits = limits
        self._in_bytes = 0
        self._out_bytes = 0

    def _fill(self) -> bool:
        dec = self._dec
        while True:
            if dec.eof:
                return False
            if dec.needs_input:
                data = self._stream.read(CHUNK)
                if not data:
                    raise InvalidFormat("truncated compressed archive", hint="the file is damaged")
                self._in_bytes += len(data)
            else:
                data = b""
            try:
                out = dec.decompress(data, CHUNK)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise InvalidFormat(f"corrupt compressed archive: {exc}") from exc
            if out:
                self._out_bytes += len(out)
                _check_caps(self._out_bytes, self._in_bytes, self._limits)
                self._buf, self._off = out, 0
                return True


def _check_caps(out: int, inp: int, limits: Limits) -> None:
    if out > limits.max_layer_bytes:
        raise LimitExceeded(f"archive decompresses to over {limits.max_layer_bytes} bytes")
    if out > compression.RATIO_FLOOR and out > limits.max_ratio * max(inp, 1):
        raise LimitExceeded(f"decompression bomb: {inp} bytes gave {out}")


def open_archive(fh: BinaryIO, kind: str, limits: Limits = DEFAULT_LIMITS) -> ChunkedReader:
    """A capped, decompressed view of an archive file of compression ``kind``."""
    if kind in ("bzip2", "xz"):
        return _StdlibDecompressed(fh, kind, limits)
    return compression.open_decompressed(fh, kind, limits)


def archive_kind(fd: int, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The compression of the tar archive in the regular file ``fd``, or None when the
    file is not a tar archive (it is then copied as a file). Leaves the offset at 0."""
    head = os.pread(fd, BLOCK_SIZE, 0)
    kind = compression_of(head)
    if kind in (None, ""):
        return kind
    # Compressed: an archive only if the decompressed data starts with a tar header.
    dup = os.dup(fd)
    with os.fdopen(dup, "rb", buffering=0) as fh:
        fh.seek(0)
        try:
            inner = open_archive(fh, kind, limits).read(BLOCK_SIZE)
        except (InvalidFormat, Unsupported, LimitExceeded):
            return None
    os.lseek(fd, 0, os.SEEK_SET)
    return kind if is_tar_header(inner) else None


def extract(
    fd: int,
    kind: str,
    dest_dir_fd: int,
    *,
    owner: tuple[int, int] | None = None,
    name: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> int:
    """Extract the archive in ``fd`` into the directory ``dest_dir_fd`` (an O_PATH fd
    already resolved inside the image root); returns the bytes of file content."""
    dup = os.dup(fd)
    with os.fdopen(dup, "rb", buffering=0) as fh:
        fh.seek(0)
        stream = open_archive(fh, kind, limits)
        # The destination directory becomes the root of the extraction: nothing the
        # archive says can reach above it. Owners are the archive's when root (Docker
        # keeps them), or --chown's.
        try:
            stats = apply_layer(
                stream,
                f"/proc/self/fd/{dest_dir_fd}",
                mode="tree",
                limits=limits,
                whiteouts="refuse",
                owner=owner,
            )
        except Unsafe as exc:
            # the same class (LimitExceeded is an Unsafe), the archive named
            raise type(exc)(f"ADD {name!r}: {exc.message}", hint=exc.hint) from exc
        return stats.bytes
