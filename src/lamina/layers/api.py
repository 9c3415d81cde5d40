"""Contracts of the layers package: the tar entry model and the limits on hostile input.

A layer is an OCI changeset (image-spec layer.md): a tar stream, optionally compressed,
whose entries add or replace paths, and whose whiteouts delete paths of the layers
below. This module holds only values; the modules that do the work are drawn in the
package docstring (:mod:`lamina.layers`).

Paths in an :class:`Entry` are always *clean*: relative, ``/``-separated, no ``.``/``..``
components, no leading ``./`` or trailing ``/``, no NUL. The root itself is never an entry.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

# OCI whiteout names (image-spec layer.md, "Whiteouts").
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
# overlayfs marks an opaque directory with this xattr: trusted.* when mounted by root,
# user.* on a ``userxattr`` mount (kernel Documentation/filesystems/overlayfs.rst).
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OVERLAY_OPAQUE_XATTR = "user.overlay.opaque"
OVERLAY_OPAQUE_XATTRS = (OVERLAY_OPAQUE_XATTR, USER_OVERLAY_OPAQUE_XATTR)
# Every xattr overlayfs reads as its own (opaque, redirect, metacopy, origin...).
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

# Layer streams move in chunks this big: tar reads, decompressor output, file writes
# (ARCHITECTURE.md section 3: big streams in chunks of 1 MiB or more).
CHUNK = 1 << 20


class EntryType(enum.Enum):
    FILE = "0"
    HARDLINK = "1"
    SYMLINK = "2"
    CHAR = "3"
    BLOCK = "4"
    DIR = "5"
    FIFO = "6"


class Readable(Protocol):
    """What layer readers need of a stream: a file, a pipe, a decompressor, a verifier."""

    def read(self, n: int = -1, /) -> bytes: ...


_EMPTY: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar member, as lamina reads and writes it.

    ``mode`` holds only the permission bits and setuid/setgid/sticky (``0o7777``);
    the file type is ``type``. ``mtime`` is in nanoseconds since the epoch (tar PAX
    headers may carry sub-second times). ``linkname`` is the target of a symlink, or the
    clean path of the hardlink target. ``size`` is the content length for FILE, else 0.
    ``xattrs`` maps names (``user.foo``, ``security.capability``) to raw values.
    """

    name: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=lambda: _EMPTY)

    @property
    def basename(self) -> str:
        return self.name.rpartition("/")[2]

    @property
    def parent(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def is_whiteout(self) -> bool:
        return self.basename.startswith(WHITEOUT_PREFIX)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one layer from outside may make lamina do (ARCHITECTURE.md §5).

    The defaults are generous for real images (a full Debian is ~7k entries, ~200 MB)
    and small enough that a bomb is stopped long before it hurts the host.
    """

    max_header_bytes: int = 1 << 20  # one PAX/GNU long-name record (Go's archive/tar cap)
    max_name_bytes: int = 4096  # PATH_MAX
    max_component_bytes: int = 255  # NAME_MAX
    max_entries: int = 1_000_000
    max_layer_bytes: int = 64 << 30  # decompressed bytes of one layer
    max_ratio: int = 1000  # decompressed / compressed bytes, checked past 64 MiB
    max_depth: int = 512  # directory depth of one path
    zstd_max_window_log: int = 27  # 128 MiB window; zstd -19 --long uses 27
    allow_devices: bool = False  # char/block nodes: only when privileged and asked for


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class LayerStats:
    """What one apply or diff did; returned for progress and --json output."""

    entries: int = 0
    files: int = 0
    bytes: int = 0
    whiteouts: int = 0
