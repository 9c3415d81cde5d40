"""Crash-safe small-file writes, shared by every package that keeps state on disk.

A file is replaced by writing a temp file beside it, fsyncing it, renaming it over the
old one and fsyncing the directory: after a crash the old or the new version is there,
never a torn one, and readers (who take no lock) always see one whole version.
Row 0 with ``errors``: standard library only.
"""

from __future__ import annotations

import os

from lamina.lightstd import suppress


def fsync_dir(path: str) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` crash-safely; raises OSError (callers wrap it).

    ``durable=False`` skips both fsyncs: readers still see the old or the new version
    (rename is atomic), but after a power cut the file may be empty. For short-lived
    files whose loss costs nothing (the record of a ``run --rm`` container)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)
