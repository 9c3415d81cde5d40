"""Tar header decoding and encoding (lamina.layers.tar), hostile cases included."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsafe, Unsupported
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.tar import blocks as tar_blocks
from lamina.layers.tar import decode as tar_decode
from lamina.layers.tar import encode as tar_encode


def header(**kw: object) -> bytes:
    """A ustar header block built field by field (for cases the encoder refuses)."""
    fields: dict[str, object] = {
        "name": b"f",
        "prefix": b"",
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "size": 0,
        "mtime": 0,
        "typeflag": b"0",
        "linkname": b"",
        "uname": b"",
        "gname": b"",
        "devmajor": 0,
        "devminor": 0,
    }
    fields.update(kw)
    return tar_encode._block(**fields)  # type: ignore[arg-type]


def decode(block: bytes, **pax: bytes) -> Entry | None:
    return tar_decode.build_entry(tar_decode.decode_header(block), pax)


# ------------------------------------------------------------------ clean_name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a/b", "a/b"),
        ("/etc/passwd", "etc/passwd"),
        ("./etc/", "etc"),
        ("././a//b/./c/", "a/b/c"),
        ("///", ""),
        (".", ""),
        ("./", ""),
        ("", ""),
        ("a/.../b", "a/.../b"),
        ("..a/b..", "..a/b.."),
    ],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert tar_decode.clean_name(raw) == clean


@pytest.mark.parametrize("raw", ["..", "../x", "a/../b", "/a/b/..", "a/..//", "./.."])
def test_clean_name_refuses_dotdot(raw: str) -> None:
    with pytest.raises(Unsafe, match=r"'\.\.'"):
        tar_decode.clean_name(raw)


def test_clean_name_refuses_nul_and_overlong() -> None:
    with pytest.raises(InvalidFormat, match="NUL"):
        tar_decode.clean_name("a\0b")
    limits = Limits(max_name_bytes=20, max_component_bytes=8, max_depth=3)
    assert tar_decode.clean_name("12345678/b", limits) == "12345678/b"
    with pytest.raises(LimitExceeded, match="component"):
        tar_decode.clean_name("123456789/b", limits)
    # a 3-byte UTF-8 char counts as 3 bytes
    with pytest.raises(LimitExceeded, match="component"):
        tar_decode.clean_name("ééééé", limits)
    with pytest.raises(LimitExceeded, match="limit"):
        tar_decode.clean_name("1234567/1234567/12345", limits)
    with pytest.raises(LimitExceeded, match="deep"):
        tar_decode.clean_name("a/b/c/d", limits)
    assert tar_decode.clean_name("a/b/c", limits) == "a/b/c"


# ------------------------------------------------------------------ numbers


def test_parse_number_octal_and_base256() -> None:
    assert tar_decode.parse_number(b"0000644\0") == 0o644
    assert tar_decode.parse_number(b"  644 \0") == 0o644
    assert tar_decode.parse_number(b"\0\0\0") == 0
    assert tar_decode.parse_number(b"17\0garbage") == 0o17
    big = 1 << 40
    assert tar_decode.parse_number(b"\x80" + big.to_bytes(11, "big")) == big
    assert tar_decode.parse_number((-5).to_bytes(12, "big", signed=True)) == -5
    with pytest.raises(InvalidFormat):
        tar_decode.parse_number(b"0000698\0")
    with pytest.raises(InvalidFormat):
        tar_decode.parse_number(b"+12\0")


# ------------------------------------------------------------------ checksum


def test_bad_checksum_is_corrupt_header_with_offset() -> None:
    blk = bytearray(header())
    blk[0] ^= 0x01
    with pytest.raises(InvalidFormat, match="corrupt tar header at offset 1536"):
        tar_decode.decode_header(bytes(blk), 1536)
    blk = bytearray(header())
    blk[148:156] = b"zzzzzz\0 "
    with pytest.raises(InvalidFormat, match="corrupt tar header at offset 0"):
        tar_decode.decode_header(bytes(blk))


def test_signed_checksum_is_accepted() -> None:
    blk = bytearray(header(name="é".encode()))
    blk[148:156] = b" " * 8
    signed = sum(b - 256 if b >= 128 else b for b in blk)
    blk[148:156] = b"%06o\0 " % signed
    assert tar_decode.decode_header(bytes(blk)).name == "é".encode()


# ------------------------------------------------------------------ PAX


def test_parse_pax_records() -> None:
    data = (
        tar_encode.pax_record("path", "dir/ünï".encode())
        + tar_encode.pax_record("SCHILY.xattr.user.bin", b"\0\n=\xff")
        + tar_encode.pax_record("path", b"second/wins")
    )
    recs = tar_decode.parse_pax(data)
    assert recs == {"path": b"second/wins", "SCHILY.xattr.user.bin": b"\0\n=\xff"}


@pytest.mark.parametrize("n", [1, 5, 6, 7, 8, 95, 96, 97, 98, 99, 100, 994, 995, 996, 1000])
def test_pax_record_length_counts_itself(n: int) -> None:
    rec = tar_encode.pax_record("k", b"v" * n)
    length, _, _ = rec.partition(b" ")
    assert int(length) == len(rec)
    assert tar_decode.parse_pax(rec) == {"k": b"v" * n}


@pytest.mark.parametrize(
    "data",
    [
        b"30 path=x\n",  # length past the end
        b"8 path=xy\n",  # length short of the record: newline not where it says
        b"11 path=x\nX",  # garbage after a record
        b"path=x\n",  # no length
        b" 9 path=x\n",
        b"-9 pat=x\n",
        b"12345678901234567890 a=b\n",  # absurd length digits
        b"6 =x\n\n",
        b"8 path\n",  # no "="
        b"7 \xff=x\n",  # key not UTF-8
        b"3 \n",  # too short to hold anything
    ],
)
def test_parse_pax_rejects_malformed(data: bytes) -> None:
    with pytest.raises(InvalidFormat):
        tar_decode.parse_pax(data)


def test_parse_pax_is_linear_on_hostile_input() -> None:
    # CVE-2024-6232 fed CPython's regex a long run of digits and spaces; a linear
    # parser refuses it at once.
    with pytest.raises(InvalidFormat):
        tar_decode.parse_pax(b"1" * 200_000 + b" " * 200_000)
    payload = b"".join(tar_encode.pax_record(f"k{i}", b"v") for i in range(50_000))
    assert len(tar_decode.parse_pax(payload)) == 50_000


def test_pax_fields_override_header() -> None:
    e = decode(
        header(name=b"short", uid=1, gid=2, size=0),
        path="pax/ünïcode/name".encode(),
        uid=b"4294967295",
        gid=b"3000000",
        size=b"12",
        mtime=b"1700000000.123456789123",
        uname="ü".encode(),
        gname=b"staff",
    )
    assert e is not None
    assert e.name == "pax/ünïcode/name"
    assert (e.uid, e.gid, e.size) == (4294967295, 3000000, 12)
    assert e.mtime_ns == 1700000000_123456789
    assert (e.uname, e.gname) == ("ü", "staff")


@pytest.mark.parametrize(
    ("value", "ns"),
    [(b"5", 5_000_000_000), (b"5.5", 5_500_000_000), (b"-1.25", -1_250_000_000)],
)
def test_pax_mtime(value: bytes, ns: int) -> None:
    e = decode(header(), mtime=value)
    assert e is not None and e.mtime_ns == ns


@pytest.mark.parametrize(
    ("key", "value"),
    [("mtime", b"1.2.3"), ("mtime", b"5."), ("mtime", b"x"), ("size", b"-1"), ("uid", b"1e9")],
)
def test_pax_bad_numbers(key: str, value: bytes) -> None:
    with pytest.raises(InvalidFormat):
        decode(header(), **{key: value})


def test_xattrs_schily_and_libarchive() -> None:
    e = decode(
        header(),
        **{
            "SCHILY.xattr.user.a": b"\x00\x01binary",
            "LIBARCHIVE.xattr.user.b%3Dc": b"aGVsbG8=",
            "SCHILY.xattr.security.capability": b"\x01\x00\x00\x02",
        },
    )
    assert e is not None
    assert dict(e.xattrs) == {
        "user.a": b"\x00\x01binary",
        "user.b=c": b"hello",
        "security.capability": b"\x01\x00\x00\x02",
    }
    with pytest.raises(InvalidFormat, match="base64"):
        decode(header(), **{"LIBARCHIVE.xattr.user.x": b"!!!"})


# ------------------------------------------------------------------ types and names


@pytest.mark.parametrize(
    ("flag", "kind"),
    [(b"0", EntryType.FILE), (b"\0", EntryType.FILE), (b"7", EntryType.FILE)],
)
def test_regular_file_flags(flag: bytes, kind: EntryType) -> None:
    e = decode(header(typeflag=flag, size=3))
    assert e is not None and e.type is kind and e.size == 3


def test_old_style_directory_by_trailing_slash() -> None:
    e = decode(header(name=b"olddir/", typeflag=b"\0", size=0))
    assert e is not None and e.type is EntryType.DIR and e.name == "olddir"


@pytest.mark.parametrize("flag", [b"S", b"D", b"M", b"V", b"N", b"Z", b"9"])
def test_unsupported_types(flag: bytes) -> None:
    with pytest.raises(Unsupported, match="type"):
        decode(header(typeflag=flag))


def test_pax_sparse_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="sparse"):
        decode(header(), **{"GNU.sparse.major": b"1", "GNU.sparse.minor": b"0"})


def test_gnu_sparse_message_is_clear() -> None:
    with pytest.raises(Unsupported, match="GNU sparse file"):
        decode(header(typeflag=b"S"))


def test_root_entries() -> None:
    assert decode(header(name=b"./", typeflag=b"5")) is None
    assert decode(header(name=b"/", typeflag=b"5")) is None
    with pytest.raises(Unsafe, match="root"):
        decode(header(name=b".", typeflag=b"2", linkname=b"/"))
    with pytest.raises(Unsafe, match="root"):
        decode(header(name=b"./", typeflag=b"0"))


def test_hardlink_targets_are_cleaned_symlinks_verbatim() -> None:
    e = decode(header(name=b"h", typeflag=b"1", linkname=b"./usr//bin/x"))
    assert e is not None and e.linkname == "usr/bin/x"
    with pytest.raises(Unsafe):
        decode(header(name=b"h", typeflag=b"1", linkname=b"../../etc/shadow"))
    with pytest.raises(Unsafe):
        decode(header(name=b"h", typeflag=b"1", linkname=b"/"))
    e = decode(header(name=b"s", typeflag=b"2", linkname=b"../../etc/./shadow"))
    assert e is not None and e.linkname == "../../etc/./shadow"
    with pytest.raises(InvalidFormat, match="NUL"):
        decode(header(name=b"s", typeflag=b"2"), linkpath=b"a\0b")
    with pytest.raises(InvalidFormat, match="empty"):
        decode(header(name=b"s", typeflag=b"2"))


def test_nul_in_pax_path_refused() -> None:
    with pytest.raises(InvalidFormat, match="NUL"):
        decode(header(), path=b"a\0/etc/passwd")


def test_header_only_types_have_no_size() -> None:
    e = decode(header(name=b"d", typeflag=b"5", size=4096))
    assert e is not None and e.size == 0


def test_formats_gnu_and_v7() -> None:
    blk = bytearray(header(name=b"n", prefix=b"would-be-ignored", uname=b"root"))
    blk[257:265] = tar_blocks.GNU_MAGIC
    blk[148:156] = b"        "
    blk[148:156] = b"%06o\0 " % sum(blk)
    hdr = tar_decode.decode_header(bytes(blk))
    assert (hdr.format, hdr.name, hdr.uname) == ("gnu", b"n", b"root")
    blk[257:512] = bytes(255)
    blk[148:156] = b"        "
    blk[148:156] = b"%06o\0 " % sum(blk)
    hdr = tar_decode.decode_header(bytes(blk))
    assert (hdr.format, hdr.name, hdr.uname) == ("v7", b"n", b"")


# ------------------------------------------------------------------ encoding


def roundtrip(entry: Entry) -> Entry:
    data = tar_encode.encode_entry(entry)
    assert len(data) % 512 == 0
    blocks = [data[i : i + 512] for i in range(0, len(data), 512)]
    pax: dict[str, bytes] = {}
    if len(blocks) > 1:
        hdr = tar_decode.decode_header(blocks[0])
        assert hdr.typeflag == b"x"
        pax = tar_decode.parse_pax(b"".join(blocks[1:-1])[: hdr.size])
    out = tar_decode.build_entry(tar_decode.decode_header(blocks[-1]), pax)
    assert out is not None
    return out


def test_plain_entries_are_one_ustar_block() -> None:
    e = Entry("usr/bin/env", EntryType.FILE, mode=0o755, uid=0, gid=0, size=10, mtime_ns=10**18)
    data = tar_encode.encode_entry(e)
    assert len(data) == 512
    assert data[257:265] == tar_blocks.USTAR_MAGIC
    assert roundtrip(e) == e


def test_long_name_uses_ustar_prefix_then_pax() -> None:
    name = "p" * 150 + "/" + "n" * 100
    data = tar_encode.encode_entry(Entry(name, EntryType.FILE))
    assert len(data) == 512  # fits prefix + name
    assert roundtrip(Entry(name, EntryType.FILE)).name == name
    longer = "p" * 160 + "/" + "n" * 100
    data = tar_encode.encode_entry(Entry(longer, EntryType.FILE))
    assert data[156:157] == b"x" and len(data) > 512
    assert roundtrip(Entry(longer, EntryType.FILE)).name == longer


def test_dir_trailing_slash_and_dir_split() -> None:
    name = "d" * 100  # 101 bytes with the slash: must not split at the trailing "/"
    data = tar_encode.encode_entry(Entry(name, EntryType.DIR, mode=0o755))
    assert roundtrip(Entry(name, EntryType.DIR, mode=0o755)).name == name
    assert b"d" * 100 + b"/" in data
    short = tar_encode.encode_entry(Entry("etc", EntryType.DIR))
    assert short[:5] == b"etc/\0"


def test_pax_for_what_ustar_cannot_hold() -> None:
    e = Entry(
        "ünïcödé",
        EntryType.FILE,
        uid=1 << 32,
        gid=3_000_000,
        size=(1 << 33) + 1,
        mtime_ns=-10 * 10**9,
        uname="a" * 40,
        gname="gröup",
        xattrs={"user.b": b"\0\xff", "security.capability": b"\x01"},
    )
    assert roundtrip(e) == e


def test_non_utf8_name_round_trips_with_hdrcharset() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    data = tar_encode.encode_entry(Entry(name, EntryType.FILE))
    assert b"hdrcharset=BINARY" in data
    assert roundtrip(Entry(name, EntryType.FILE)).name == name


def test_subsecond_mtime_is_truncated_to_seconds() -> None:
    e = roundtrip(Entry("f", EntryType.FILE, mtime_ns=1_700_000_000_999_999_999))
    assert e.mtime_ns == 1_700_000_000_000_000_000


def test_encode_is_deterministic_and_sorts_xattrs() -> None:
    a = Entry("f", EntryType.FILE, xattrs={"user.b": b"2", "user.a": b"1"})
    b = Entry("f", EntryType.FILE, xattrs={"user.a": b"1", "user.b": b"2"})
    assert tar_encode.encode_entry(a) == tar_encode.encode_entry(b)


@pytest.mark.parametrize(
    "entry",
    [
        Entry("/abs", EntryType.FILE),
        Entry("a/../b", EntryType.FILE),
        Entry("a//b", EntryType.FILE),
        Entry("a/", EntryType.DIR),
        Entry("", EntryType.DIR),
        Entry("f", EntryType.FILE, mode=0o100644),
        Entry("f", EntryType.FILE, size=-1),
        Entry("l", EntryType.SYMLINK),
        Entry("c", EntryType.CHAR, devmajor=1 << 30),
        Entry("f", EntryType.FILE, xattrs={"user.a=b": b""}),
    ],
)
def test_encode_refuses_bad_entries(entry: Entry) -> None:
    with pytest.raises(InvalidArgument):
        tar_encode.encode_entry(entry)
