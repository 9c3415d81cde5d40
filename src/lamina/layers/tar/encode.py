"""Tar headers encoded from :class:`~lamina.layers.api.Entry` values, with no I/O.

Formats written: ustar when every field fits, else ustar preceded by one PAX ``x``
header (POSIX.1-2001). Deterministic: the same Entry always gives the same bytes.
"""

from __future__ import annotations

from lamina.errors import InvalidArgument
from lamina.layers.api import Entry, EntryType
from lamina.layers.tar.blocks import (
    MAX_OCTAL_7,
    MAX_OCTAL_11,
    NUL,
    PAX_LOCAL,
    USTAR_MAGIC,
    name_bytes,
    padding,
)

_TYPEFLAG = {kind: kind.value.encode() for kind in EntryType}


def _oct(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _block(  # noqa: PLR0917 -- positional on purpose: called once per entry on the hot path
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    blk = bytearray(
        b"".join(
            (
                name.ljust(100, NUL),
                _oct(mode, 8),
                _oct(uid, 8),
                _oct(gid, 8),
                _oct(size, 12),
                _oct(mtime, 12),
                b"        ",
                typeflag,
                linkname.ljust(100, NUL),
                USTAR_MAGIC,
                uname.ljust(32, NUL),
                gname.ljust(32, NUL),
                _oct(devmajor, 8),
                _oct(devminor, 8),
                prefix.ljust(155, NUL),
                bytes(12),
            )
        )
    )
    blk[148:156] = b"%06o\0 " % sum(blk)
    return bytes(blk)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fitting ustar's 155 + 100 bytes, or None."""
    if len(name) <= 100:
        return b"", name
    cut = name.rfind(b"/", 0, min(len(name) - 1, 156))
    if cut <= 0 or len(name) - cut - 1 > 100:
        return None
    return name[:cut], name[cut + 1 :]


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    # the length counts its own digits: grow until it is stable
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _is_clean(name: str) -> bool:
    s = "/" + name + "/"
    return not ("//" in s or "/./" in s or "/../" in s or "\0" in s)


def encode_entry(entry: Entry) -> bytes:
    """The header block(s) for one entry: a ustar header, preceded by a PAX header when
    a field does not fit ustar. Deterministic: the same Entry gives the same bytes.

    Sub-second mtimes are dropped (integer seconds are written); uname and gname are
    written as given.
    """
    name = entry.name
    if not _is_clean(name):
        raise InvalidArgument(f"tar entry name {name!r} is not a clean relative path")
    if entry.mode & ~0o7777 or entry.mode < 0:
        raise InvalidArgument(f"tar entry {name!r} has mode {entry.mode:#o} beyond 0o7777")
    kind = entry.type
    size = entry.size if kind is EntryType.FILE else 0
    if size < 0 or entry.uid < 0 or entry.gid < 0:
        raise InvalidArgument(f"tar entry {name!r} has a negative size, uid or gid")
    pax: list[bytes] = []

    binary = False  # a name that is not UTF-8 needs "hdrcharset=BINARY" (POSIX pax)
    raw_name = name_bytes(name + "/" if kind is EntryType.DIR else name)
    split = _split_ustar(raw_name) if name.isascii() else None
    if split is None:
        pax.append(pax_record("path", raw_name))
        split = b"", raw_name[:100]
        binary = not _is_utf8(raw_name)

    raw_link = b""
    if kind is EntryType.HARDLINK or kind is EntryType.SYMLINK:
        if not entry.linkname or "\0" in entry.linkname:
            raise InvalidArgument(f"tar entry {name!r} has an empty or NUL link target")
        raw_link = name_bytes(entry.linkname)
        if len(raw_link) > 100 or not entry.linkname.isascii():
            pax.append(pax_record("linkpath", raw_link))
            binary = binary or not _is_utf8(raw_link)
            raw_link = raw_link[:100]

    if size > MAX_OCTAL_11:
        pax.append(pax_record("size", b"%d" % size))
        size = 0
    uid, gid = entry.uid, entry.gid
    if uid > MAX_OCTAL_7:
        pax.append(pax_record("uid", b"%d" % uid))
        uid = 0
    if gid > MAX_OCTAL_7:
        pax.append(pax_record("gid", b"%d" % gid))
        gid = 0
    uname, gname = name_bytes(entry.uname), name_bytes(entry.gname)
    if len(uname) > 32 or not entry.uname.isascii():
        pax.append(pax_record("uname", uname))
        uname = b""
    if len(gname) > 32 or not entry.gname.isascii():
        pax.append(pax_record("gname", gname))
        gname = b""
    mtime = entry.mtime_ns // 1_000_000_000
    if mtime < 0 or mtime > MAX_OCTAL_11:
        pax.append(pax_record("mtime", b"%d" % mtime))
        mtime = 0
    devmajor, devminor = entry.devmajor, entry.devminor
    if kind is not EntryType.CHAR and kind is not EntryType.BLOCK:
        devmajor = devminor = 0
    elif not (0 <= devmajor <= MAX_OCTAL_7 and 0 <= devminor <= MAX_OCTAL_7):
        raise InvalidArgument(f"device {name!r} has numbers {devmajor},{devminor} out of range")
    if entry.xattrs:
        for xname in sorted(entry.xattrs):
            if not xname or "\0" in xname or "=" in xname:
                raise InvalidArgument(f"tar entry {name!r} has an invalid xattr name {xname!r}")
            pax.append(pax_record("SCHILY.xattr." + xname, bytes(entry.xattrs[xname])))

    header = _block(
        split[1],
        split[0],
        entry.mode,
        uid,
        gid,
        size,
        mtime,
        _TYPEFLAG[kind],
        raw_link,
        uname[:32],
        gname[:32],
        devmajor,
        devminor,
    )
    if not pax:
        return header
    if binary:
        pax.insert(0, pax_record("hdrcharset", b"BINARY"))
    payload = b"".join(pax)
    pax_header = _block(
        b"././@PaxHeader", b"", 0o644, 0, 0, len(payload), 0, PAX_LOCAL, b"", b"", b"", 0, 0
    )
    return b"".join((pax_header, payload, bytes(padding(len(payload))), header))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
