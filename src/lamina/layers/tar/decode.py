"""Tar headers decoded into :class:`~lamina.layers.api.Entry` values, with no I/O.

Formats read: POSIX ustar (``ustar\\0`` ``00``), GNU (``ustar  \\0``, base-256 numbers,
``L``/``K`` long names), old v7 (no magic), POSIX.1-2001 PAX extended headers (``x``,
and ``g`` which is parsed, capped and ignored).

Everything here is hostile-input code: every length is checked before use, PAX records
are parsed by a linear hand-written parser (CPython's regex parser had a ReDoS,
CVE-2024-6232), and every payload is capped by ``Limits.max_header_bytes``.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from lamina.errors import InvalidFormat, LimitExceeded, Unsafe, Unsupported
from lamina.layers.api import DEFAULT_LIMITS, Entry, EntryType, Limits
from lamina.layers.tar.blocks import (
    BLOCK_SIZE,
    EXTENDED_TYPES,
    GNU_MAGIC,
    NUL,
    USTAR_MAGIC,
    name_bytes,
    name_text,
)

_TYPES: dict[bytes, EntryType] = {
    b"0": EntryType.FILE,
    b"\0": EntryType.FILE,  # old "regular file" (AREGTYPE)
    b"7": EntryType.FILE,  # contiguous file: a regular file everywhere that matters
    b"1": EntryType.HARDLINK,
    b"2": EntryType.SYMLINK,
    b"3": EntryType.CHAR,
    b"4": EntryType.BLOCK,
    b"5": EntryType.DIR,
    b"6": EntryType.FIFO,
}
_UNSUPPORTED_TYPES = {
    b"S": "GNU sparse file",
    b"D": "GNU dump directory",
    b"M": "GNU multi-volume continuation",
    b"N": "GNU old long name",
    b"V": "GNU volume label",
}

_MAX_PAX_NUMBER_DIGITS = 20  # 2**63 has 19 digits; longer is hostile


# --------------------------------------------------------------------------- numbers


def parse_number(field: bytes, offset: int = 0) -> int:
    """A numeric header field: octal text, or GNU base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        # GNU base-256: 0x80 marks a positive number in the remaining bytes, 0xff a
        # negative one in two's complement over the whole field.
        if field[0] & 0x40:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    text = field.partition(NUL)[0].strip(b" ")
    if text.isdigit():  # ASCII 0-9 only: no sign, "_", "0o" or spaces reach int()
        try:
            return int(text, 8)
        except ValueError:
            pass
    elif not text:
        return 0
    raise InvalidFormat(f"corrupt tar header at offset {offset}: bad number {text[:16]!r}")


# --------------------------------------------------------------------------- headers


class Header(NamedTuple):
    """One decoded 512-byte header block, with its fields as the block holds them.

    A NamedTuple rather than a frozen dataclass: one is built per member on the hot
    path of every apply, and a tuple is several times cheaper to make.
    """

    name: bytes  # ustar prefix already joined
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    typeflag: bytes  # one byte
    linkname: bytes
    uname: bytes
    gname: bytes
    devmajor: int
    devminor: int
    format: str  # "ustar" | "gnu" | "v7"

    @property
    def is_extended(self) -> bool:
        return self.typeflag in EXTENDED_TYPES


_HIGH_BYTES = bytes(range(0x80, 0x100))


def _checksum_ok(block: bytes, stored: int) -> bool:
    # The checksum is the sum of the block with its own field read as 8 spaces. POSIX
    # says unsigned bytes; some old tars (Sun, early GNU) summed signed chars: accept both.
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    if unsigned == stored:
        return True
    rest = block[:148] + block[156:]
    high = len(rest) - len(rest.translate(None, _HIGH_BYTES))
    return unsigned - 256 * high == stored


# ustar field layout (POSIX pax "ustar Interchange Format"); GNU reuses it up to gname
_FIELDS = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


def decode_header(block: bytes, offset: int = 0) -> Header:
    """Decode one header block (not a zero block). Raises InvalidFormat if corrupt."""
    if len(block) != BLOCK_SIZE:
        raise InvalidFormat(f"truncated tar header at offset {offset}")
    (
        name,
        mode,
        uid,
        gid,
        size_f,
        mtime,
        chksum,
        typeflag,
        linkname,
        magic,
        uname,
        gname,
        devmajor,
        devminor,
        prefix,
    ) = _FIELDS.unpack(block)
    corrupt = f"corrupt tar header at offset {offset}"
    try:
        stored = parse_number(chksum, offset)
    except InvalidFormat:
        raise InvalidFormat(corrupt, hint="the layer is damaged or is not a tar") from None
    if not _checksum_ok(block, stored):
        raise InvalidFormat(corrupt, hint="the layer is damaged or is not a tar")

    if magic == USTAR_MAGIC or magic[:6] == b"ustar\0":
        fmt = "ustar"
    elif magic == GNU_MAGIC:
        fmt = "gnu"
    else:
        fmt = "v7"

    name = name.partition(NUL)[0]
    if fmt == "ustar":
        prefix = prefix.partition(NUL)[0]
        if prefix:
            name = prefix + b"/" + name
    if fmt == "v7":
        uname = gname = b""
        major = minor = 0
    else:
        uname = uname.partition(NUL)[0]
        gname = gname.partition(NUL)[0]
        major = parse_number(devmajor, offset)
        minor = parse_number(devminor, offset)
    size = parse_number(size_f, offset)
    if size < 0:
        raise InvalidFormat(f"{corrupt}: negative size {size}")
    return Header(
        name,
        parse_number(mode, offset),
        parse_number(uid, offset),
        parse_number(gid, offset),
        size,
        parse_number(mtime, offset),
        typeflag,
        linkname.partition(NUL)[0],
        uname,
        gname,
        major,
        minor,
        fmt,
    )


# --------------------------------------------------------------------------- PAX


def parse_pax(data: bytes, offset: int = 0) -> dict[str, bytes]:
    """Parse PAX extended header records ``"%d %s=%s\\n"`` (POSIX.1-2001, pax "Extended
    Header"). Linear: each record's length is read, checked, and jumped over.

    Keys are text; values stay bytes (xattr values are binary). A later record with the
    same key wins, as POSIX says.
    """
    records: dict[str, bytes] = {}
    pos = 0
    end = len(data)
    bad = f"corrupt PAX header at offset {offset}"
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 12))
        if space <= pos:
            raise InvalidFormat(f"{bad}: record without a length")
        digits = data[pos:space]
        if digits.translate(None, b"0123456789"):
            raise InvalidFormat(f"{bad}: bad record length {digits!r}")
        length = int(digits)
        stop = pos + length
        if length < len(digits) + 3 or stop > end or data[stop - 1] != 0x0A:
            raise InvalidFormat(f"{bad}: record length {length} does not match its record")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq or not key:
            raise InvalidFormat(f"{bad}: record without a key")
        try:
            records[key.decode("utf-8")] = value
        except UnicodeDecodeError:
            raise InvalidFormat(f"{bad}: key is not UTF-8") from None
        pos = stop
    return records


def _pax_int(key: str, value: bytes, offset: int) -> int:
    if not value or len(value) > _MAX_PAX_NUMBER_DIGITS or value.translate(None, b"0123456789"):
        raise InvalidFormat(f"corrupt PAX header at offset {offset}: bad {key} {value[:32]!r}")
    return int(value)


def _pax_time_ns(value: bytes, offset: int) -> int:
    """A PAX time, ``[-]seconds[.fraction]``, in nanoseconds (fraction truncated)."""
    negative = value.startswith(b"-")
    body = value[1:] if negative else value
    secs, dot, frac = body.partition(b".")
    if (
        not secs
        or len(secs) > _MAX_PAX_NUMBER_DIGITS
        or secs.translate(None, b"0123456789")
        or (dot and (not frac or frac.translate(None, b"0123456789")))
    ):
        raise InvalidFormat(f"corrupt PAX header at offset {offset}: bad mtime {value[:32]!r}")
    ns = int(secs) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0"))
    return -ns if negative else ns


def _unpercent(text: str) -> str:
    """libarchive %-encodes xattr names in ``LIBARCHIVE.xattr.*`` keys."""
    if "%" not in text:
        return text
    raw = name_bytes(text)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # "%"
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair.translate(None, b"0123456789abcdefABCDEF"):
                raise InvalidFormat(f"bad %-encoding in xattr name {text[:64]!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return name_text(bytes(out))


# --------------------------------------------------------------------------- names


def clean_name(raw: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """Clean a member name into lamina's path form (see :mod:`lamina.layers.api`).

    Leading ``/`` and ``./``, repeated ``/``, ``.`` components and a trailing ``/`` go;
    ``..`` anywhere is refused (Unsafe), as are NUL (InvalidFormat) and names or
    components over the limits (LimitExceeded). The root itself gives ``""``.
    """
    if "\0" in raw:
        raise InvalidFormat(f"tar member name {raw[:64]!r} contains NUL")
    parts = [p for p in raw.split("/") if p and p != "."]
    if ".." in parts:
        raise Unsafe(
            f"tar member {raw[:256]!r} has a '..' component",
            hint="the layer tries to write outside its root; do not use this image",
        )
    if len(parts) > limits.max_depth:
        raise LimitExceeded(f"tar member {raw[:64]!r}... is {len(parts)} directories deep")
    name = "/".join(parts)
    if len(name) > limits.max_name_bytes or any(
        len(p) > limits.max_component_bytes // 4 for p in parts
    ):
        # cheap test first (a str is at most 4 bytes per char), exact test in bytes next
        raw_name = name_bytes(name)
        if len(raw_name) > limits.max_name_bytes:
            raise LimitExceeded(
                f"tar member name is {len(raw_name)} bytes, over the {limits.max_name_bytes} limit"
            )
        for p in parts:
            if len(name_bytes(p)) > limits.max_component_bytes:
                raise LimitExceeded(
                    f"tar member {name[:64]!r}... has a component over"
                    f" {limits.max_component_bytes} bytes"
                )
    return name


# --------------------------------------------------------------------------- entries

_EMPTY_XATTRS: Mapping[str, bytes] = MappingProxyType({})


def build_entry(
    hdr: Header,
    pax: Mapping[str, bytes],
    *,
    longname: bytes | None = None,
    longlink: bytes | None = None,
    limits: Limits = DEFAULT_LIMITS,
    offset: int = 0,
) -> Entry | None:
    """Merge a header with the PAX records and GNU long names that preceded it.

    Returns None for an entry that names the root directory itself (the reader skips
    it); a root entry of any other type is refused (CVE-2021-29136: a symlink replacing
    the root redirected later writes to the host).
    """
    kind = _TYPES.get(hdr.typeflag)
    if kind is None:
        what = _UNSUPPORTED_TYPES.get(hdr.typeflag)
        if what is not None:
            raise Unsupported(
                f"tar entry type {hdr.typeflag.decode('latin-1')!r} ({what}) is not supported",
                hint="rebuild the layer without sparse files or multi-volume tar features",
            )
        raise Unsupported(
            f"unknown tar entry type {hdr.typeflag!r} at offset {offset}",
            hint="lamina reads files, links, directories, devices and fifos only",
        )
    if any(k.startswith("GNU.sparse.") for k in pax):
        raise Unsupported(
            "PAX sparse files are not supported",
            hint="rebuild the layer without --sparse (OCI layers SHOULD NOT use sparse files)",
        )

    raw_name = pax.get("path") or longname or hdr.name
    if hdr.typeflag == b"\0" and raw_name.endswith(b"/"):
        kind = EntryType.DIR  # old tars marked directories by a trailing slash only
    name = clean_name(name_text(raw_name), limits)
    if not name:
        if kind is EntryType.DIR:
            return None
        raise Unsafe(
            f"tar entry {name_text(raw_name)!r} would replace the root directory with a"
            f" {kind.name.lower()}",
            hint="the layer is hostile (CVE-2021-29136); do not use this image",
        )

    raw_link = pax.get("linkpath") or longlink or hdr.linkname
    linkname = ""
    if kind is EntryType.HARDLINK:
        linkname = clean_name(name_text(raw_link), limits)
        if not linkname:
            raise Unsafe(f"hardlink {name!r} points at the root directory")
    elif kind is EntryType.SYMLINK:
        if NUL in raw_link:
            raise InvalidFormat(f"symlink {name!r} has a NUL in its target")
        if not raw_link:
            raise InvalidFormat(f"symlink {name!r} has an empty target")
        if len(raw_link) > limits.max_name_bytes:
            raise LimitExceeded(f"symlink {name!r} has a target over {limits.max_name_bytes} bytes")
        linkname = name_text(raw_link)

    size = hdr.size
    uid, gid = hdr.uid, hdr.gid
    mtime_ns = hdr.mtime * 1_000_000_000
    uname, gname = hdr.uname, hdr.gname
    devmajor, devminor = hdr.devmajor, hdr.devminor
    xattrs: dict[str, bytes] = {}
    for key, value in pax.items():
        if key == "size":
            size = _pax_int(key, value, offset)
        elif key == "uid":
            uid = _pax_int(key, value, offset)
        elif key == "gid":
            gid = _pax_int(key, value, offset)
        elif key == "mtime":
            mtime_ns = _pax_time_ns(value, offset)
        elif key == "uname":
            uname = value
        elif key == "gname":
            gname = value
        elif key == "SCHILY.devmajor":
            devmajor = _pax_int(key, value, offset)
        elif key == "SCHILY.devminor":
            devminor = _pax_int(key, value, offset)
        elif key.startswith("SCHILY.xattr."):
            xattrs[key[13:]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            try:
                # libarchive may leave out the "=" padding
                padded = value + b"=" * (-len(value) % 4)
                decoded = binascii.a2b_base64(padded, strict_mode=True) if value else b""
            except binascii.Error:
                raise InvalidFormat(f"bad base64 in {key[:80]!r} of {name!r}") from None
            xattrs[_unpercent(key[17:])] = decoded
    for xname in xattrs:
        if not xname or "\0" in xname:
            raise InvalidFormat(f"tar entry {name!r} has an invalid xattr name {xname[:64]!r}")

    if kind is not EntryType.FILE:
        size = 0
    if kind not in (EntryType.CHAR, EntryType.BLOCK):
        devmajor = devminor = 0
    if uid < 0 or gid < 0:
        raise InvalidFormat(f"tar entry {name!r} has a negative uid or gid")
    return Entry(
        name=name,
        type=kind,
        mode=hdr.mode & 0o7777,
        uid=uid,
        gid=gid,
        size=size,
        mtime_ns=mtime_ns,
        linkname=linkname,
        uname=name_text(uname),
        gname=name_text(gname),
        devmajor=devmajor,
        devminor=devminor,
        xattrs=MappingProxyType(xattrs) if xattrs else _EMPTY_XATTRS,
    )
