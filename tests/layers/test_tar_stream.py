"""The streaming tar reader and the tar writer (lamina.layers.tar.stream).

Interop: GNU tar reads what TarWriter writes; read_entries reads what GNU tar (every
format) and CPython's tarfile write. Hostile streams are refused with lamina errors.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded, Unsafe, Unsupported
from lamina.layers.api import Entry, EntryType, Limits
from lamina.layers.tar import TarWriter, read_entries
from lamina.layers.tar import blocks as tar_blocks
from lamina.layers.tar import encode as tar_encode


def write_tar(items: list[tuple[Entry, bytes]]) -> bytes:
    out = io.BytesIO()
    w = TarWriter(out)
    for entry, data in items:
        w.add_bytes(entry, data)
    w.close()
    return out.getvalue()


DEFAULT = Limits()


def read_all(data: bytes | io.RawIOBase, limits: Limits = DEFAULT) -> list[tuple[Entry, bytes]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    return [(e, r.read()) for e, r in read_entries(stream, limits)]


def f(name: str, data: bytes = b"", **kw: object) -> tuple[Entry, bytes]:
    return Entry(name, EntryType.FILE, size=len(data), **kw), data  # type: ignore[arg-type]


class Trickle(io.RawIOBase):
    """A non-seekable stream that returns at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self.reads_after_eof = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._step, len(self._data) - self._pos)
        if n == 0:
            self.reads_after_eof += 1
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    @property
    def at_eof(self) -> bool:
        return self._pos == len(self._data)


# ------------------------------------------------------------------ writer basics


def test_close_writes_exactly_two_zero_blocks() -> None:
    data = write_tar([f("a", b"x")])
    assert len(data) == 512 + 512 + 1024
    assert data[-1024:] == bytes(1024)
    assert write_tar([]) == bytes(1024)


def test_writer_is_deterministic() -> None:
    items = [
        (Entry("d", EntryType.DIR, mode=0o755, mtime_ns=1), b""),
        f("d/f", os.urandom(3000), mode=0o600, xattrs={"user.k": b"v"}),
    ]
    assert write_tar(items) == write_tar(items)


def test_writer_streams_big_content_in_chunks() -> None:
    payload = os.urandom((3 << 20) + 17)
    chunks: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            assert isinstance(data, bytes)
            chunks.append(data)

    w = TarWriter(Sink())
    w.add(Entry("big", EntryType.FILE, size=len(payload)), io.BytesIO(payload))
    w.close()
    assert max(len(c) for c in chunks) <= 1 << 20
    assert w.bytes_written == sum(len(c) for c in chunks)
    ((e, got),) = read_all(b"".join(chunks))
    assert got == payload and e.size == len(payload)


def test_writer_reads_only_size_bytes_and_refuses_short_content() -> None:
    out = io.BytesIO()
    w = TarWriter(out)
    src = io.BytesIO(b"0123456789")
    w.add(Entry("f", EntryType.FILE, size=4), src)
    assert src.tell() == 4
    with pytest.raises(InvalidArgument, match="early"):
        w.add(Entry("g", EntryType.FILE, size=100), io.BytesIO(b"short"))
    with pytest.raises(InvalidArgument, match="no content"):
        w.add(Entry("h", EntryType.FILE, size=1))
    with pytest.raises(InvalidArgument, match="size"):
        w.add_bytes(Entry("h", EntryType.FILE, size=1), b"ab")


def test_writer_accepts_content_without_readinto() -> None:
    class ReadOnly:
        def __init__(self) -> None:
            self._b = io.BytesIO(b"abc" * 1000)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(min(n, 100))

    out = io.BytesIO()
    w = TarWriter(out)
    w.add(Entry("f", EntryType.FILE, size=3000), ReadOnly())  # type: ignore[arg-type]
    w.close()
    assert read_all(out.getvalue())[0][1] == b"abc" * 1000


# ------------------------------------------------------------------ round trip property

_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
    min_size=1,
    max_size=40,
).filter(lambda s: s not in (".", ".."))
_path = st.lists(_component, min_size=1, max_size=8).map("/".join)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@st.composite
def entries(draw: st.DrawFn) -> list[tuple[Entry, bytes]]:
    names = draw(st.lists(_path, min_size=1, max_size=12, unique=True))
    out: list[tuple[Entry, bytes]] = []
    for name in names:
        kind = draw(st.sampled_from(list(EntryType)))
        data = draw(st.binary(max_size=2000)) if kind is EntryType.FILE else b""
        link = ""
        if kind is EntryType.SYMLINK:
            link = draw(_text.filter(bool))
        elif kind is EntryType.HARDLINK:
            link = draw(_path)
        dev = (0, 0)
        if kind in (EntryType.CHAR, EntryType.BLOCK):
            dev = (draw(st.integers(0, 4095)), draw(st.integers(0, (1 << 20) - 1)))
        xattrs = draw(
            st.dictionaries(
                st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=1, max_size=20).map(
                    lambda s: "user." + s
                ),
                st.binary(max_size=64),
                max_size=3,
            )
        )
        entry = Entry(
            name=name,
            type=kind,
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(st.integers(0, (1 << 32) - 1)),
            gid=draw(st.integers(0, (1 << 32) - 1)),
            size=len(data),
            mtime_ns=draw(st.integers(-(1 << 34), 1 << 36)) * 1_000_000_000,
            linkname=link,
            uname=draw(_text.filter(lambda s: len(s.encode()) < 80)),
            gname=draw(_text.filter(lambda s: len(s.encode()) < 80)),
            devmajor=dev[0],
            devminor=dev[1],
            xattrs=xattrs,
        )
        out.append((entry, data))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries(), st.integers(1, 700))
def test_write_then_read_gives_the_same_entries(
    items: list[tuple[Entry, bytes]], step: int
) -> None:
    data = write_tar(items)
    assert read_all(data) == items
    assert read_all(Trickle(data, step)) == items  # type: ignore[arg-type]


# ------------------------------------------------------------------ reader behaviour


def test_unread_content_is_skipped_and_reader_expires() -> None:
    data = write_tar([f("a", b"A" * 5000), f("b", b"B" * 10)])
    it = read_entries(Trickle(data, 333))
    _, r1 = next(it)
    assert r1.read(3) == b"AAA"
    e2, r2 = next(it)
    assert e2.name == "b" and r2.read() == b"B" * 10
    with pytest.raises(InvalidArgument, match="moved on"):
        r1.read()
    assert list(it) == []


def test_readinto_and_partial_reads() -> None:
    payload = os.urandom(200_000)
    data = write_tar([f("a", payload)])
    for _, r in read_entries(Trickle(data, 70_000)):
        buf = bytearray(100_000)
        got = b""
        while n := r.readinto(buf):
            got += bytes(buf[:n])
        assert got == payload
        assert r.readinto(buf) == 0 and r.read() == b""


def test_trailing_bytes_after_end_blocks_are_read_to_eof() -> None:
    data = write_tar([f("a", b"x")]) + bytes(10240 - 2048) + b"junk"
    stream = Trickle(data, 4096)
    assert [e.name for e, _ in read_entries(stream)] == ["a"]
    assert stream.at_eof


def test_clean_eof_at_header_boundary_is_accepted() -> None:
    data = write_tar([f("a", b"x"), f("b", b"y")])[:-1024]
    assert [e.name for e, _ in read_all(data)] == ["a", "b"]
    # one end block only, then EOF: accepted as GNU tar and Go do
    assert len(read_all(data + bytes(512))) == 2
    assert read_all(b"") == []


@pytest.mark.parametrize("cut", [100, 512, 700, 1024 + 100, 1536 + 3])
def test_truncated_stream(cut: int) -> None:
    pax_entry = Entry("p" * 200 + "/" + "q" * 200, EntryType.FILE, size=600)
    data = write_tar([(pax_entry, b"z" * 600)])
    # cuts: inside the PAX header, inside its payload, inside the ustar header, content
    with pytest.raises(InvalidFormat, match="truncated tar"):
        read_all(data[:cut])


def test_truncated_after_extended_header_only() -> None:
    data = tar_encode.encode_entry(Entry("p/" * 150 + "q", EntryType.FILE))[:-512]
    with pytest.raises(InvalidFormat, match="truncated"):
        read_all(data)
    with pytest.raises(InvalidFormat, match="no entry"):
        read_all(data + bytes(1024))


def test_lone_zero_block_then_data_is_refused() -> None:
    one = write_tar([f("a", b"x")])[:-1024]
    with pytest.raises(InvalidFormat, match="lone zero block"):
        read_all(one + bytes(512) + one)


def test_corrupt_checksum_names_the_offset() -> None:
    data = bytearray(write_tar([f("a", b"x" * 600), f("b", b"y")]))
    data[1536 + 10] ^= 0xFF  # inside the second header (after 512 + 1024 bytes)
    with pytest.raises(InvalidFormat, match="corrupt tar header at offset 1536"):
        read_all(bytes(data))


def test_garbage_is_not_a_tar() -> None:
    with pytest.raises(InvalidFormat, match="corrupt tar header at offset 0"):
        read_all(os.urandom(4096))


# ------------------------------------------------------------------ hostile caps


def raw_member(typeflag: bytes, payload: bytes, name: bytes = b"././@LongLink") -> bytes:
    hdr = tar_encode._block(name, b"", 0o644, 0, 0, len(payload), 0, typeflag, b"", b"", b"", 0, 0)
    return hdr + payload + bytes(tar_blocks.padding(len(payload)))


def test_oversized_pax_header_is_refused_before_reading() -> None:
    limits = Limits(max_header_bytes=4096)
    payload = tar_encode.pax_record("path", b"a" * 5000)
    data = raw_member(b"x", payload) + write_tar([f("x")])
    with pytest.raises(LimitExceeded, match="extended header"):
        read_all(data, limits)
    # a header that claims 8 GiB without sending it is refused on the header alone
    huge = tar_encode._block(b"h", b"", 0o644, 0, 0, 0o77777777777, 0, b"x", b"", b"", b"", 0, 0)
    with pytest.raises(LimitExceeded):
        read_all(huge)
    # the default cap (1 MiB) also holds
    with pytest.raises(LimitExceeded):
        read_all(raw_member(b"x", tar_encode.pax_record("path", b"a" * (1 << 20))))


def test_gnu_long_name_over_the_cap() -> None:
    limits = Limits(max_header_bytes=1024)
    data = raw_member(b"L", b"n" * 2000 + b"\0") + write_tar([f("x")])
    with pytest.raises(LimitExceeded):
        read_all(data, limits)


def test_many_small_extended_headers_are_capped_together() -> None:
    limits = Limits(max_header_bytes=8192)
    one = raw_member(b"x", tar_encode.pax_record("SCHILY.xattr.user.a", b"v" * 3000))
    with pytest.raises(LimitExceeded):
        read_all(one * 4 + write_tar([f("x")]), limits)
    # global headers do not accumulate
    glob = raw_member(b"g", tar_encode.pax_record("comment", b"v" * 3000))
    assert [e.name for e, _ in read_all(glob * 10 + write_tar([f("x")]), limits)] == ["x"]


def test_gnu_long_name_and_link_are_used() -> None:
    name = "d/" + "n" * 200 + "/" + "m" * 200
    link = "t" * 400
    hdr = tar_encode._block(b"short", b"", 0o777, 0, 0, 0, 0, b"2", b"trunc", b"", b"", 0, 0)
    data = (
        raw_member(b"L", name.encode() + b"\0")
        + raw_member(b"K", link.encode() + b"\0")
        + hdr
        + bytes(1024)
    )
    ((e, _),) = read_all(data)
    assert (e.name, e.linkname, e.type) == (name, link, EntryType.SYMLINK)


def test_entry_and_byte_caps() -> None:
    data = write_tar([f(f"f{i}", b"x") for i in range(10)])
    with pytest.raises(LimitExceeded, match="entries"):
        read_all(data, Limits(max_entries=9))
    assert len(read_all(data, Limits(max_entries=10))) == 10
    with pytest.raises(LimitExceeded, match="limit"):
        read_all(data, Limits(max_layer_bytes=len(data) - 1))


def test_hostile_names() -> None:
    with pytest.raises(Unsafe):
        read_all(raw_member(b"0", b"", name=b"../../etc/passwd") + bytes(1024))
    with pytest.raises(Unsafe, match="root"):
        sym = tar_encode._block(b".", b"", 0o777, 0, 0, 0, 0, b"2", b"/etc", b"", b"", 0, 0)
        read_all(sym + bytes(1024))
    # a root directory entry is skipped, the rest is read
    root = tar_encode._block(b"./", b"", 0o755, 0, 0, 0, 0, b"5", b"", b"", b"", 0, 0)
    assert [e.name for e, _ in read_all(root + write_tar([f("a")]))] == ["a"]


def test_sparse_member_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="sparse"):
        read_all(raw_member(b"S", b"", name=b"sparse") + bytes(1024))


# ------------------------------------------------------------------ interop


def make_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "file").write_bytes(b"hello\n" * 1000)
    (root / "dir" / "empty").write_bytes(b"")
    os.link(root / "dir" / "file", root / "dir" / "hard")
    os.symlink("../dir/file", root / "dir" / "sub" / "rel")
    os.symlink("/etc/passwd", root / "dir" / "abs")
    os.mkfifo(root / "dir" / "fifo")
    long_dir = root / ("L" * 120) / ("M" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("N" * 90)).write_bytes(b"deep")
    (root / "dir" / "exec").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "dir" / "exec", 0o4755)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    make_tree(root)
    if os.geteuid() == 0:
        os.mknod(root / "dir" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "dir" / "loop", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.chown(root / "dir" / "file", 3_000_000, 4_000_000)
    return root


def by_name(items: list[tuple[Entry, bytes]]) -> dict[str, tuple[Entry, bytes]]:
    return {e.name: (e, d) for e, d in items}


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar", "v7"])
def test_reads_gnu_tar_formats(tree: Path, fmt: str) -> None:
    if fmt in ("ustar", "v7") and os.geteuid() == 0:
        os.chown(tree / "dir" / "file", 0, 0)  # ustar cannot hold uid 3000000
    cmd = ["tar", f"--format={fmt}", "--sort=name", "-cf", "-", "-C", str(tree), "dir"]
    if fmt in ("gnu", "pax"):
        cmd.append("L" * 120)
        cmd.insert(1, "--owner=0")
        if os.geteuid() == 0:
            cmd[1] = "--numeric-owner"
    proc = subprocess.run(cmd, capture_output=True, check=False)
    assert proc.returncode in (0, 2), proc.stderr  # ustar/v7 warn about what they cannot hold
    got = by_name(read_all(proc.stdout))
    assert got["dir"][0].type is EntryType.DIR
    assert got["dir/file"][1] == b"hello\n" * 1000
    hard = got["dir/hard"][0] if "dir/hard" in got else got["dir/file"][0]
    assert hard.type in (EntryType.HARDLINK, EntryType.FILE)
    if "dir/hard" in got and hard.type is EntryType.HARDLINK:
        assert hard.linkname == "dir/file"
    assert got["dir/sub/rel"][0].linkname == "../dir/file"
    assert got["dir/abs"][0].linkname == "/etc/passwd"
    assert got["dir/exec"][0].mode == 0o4755
    if fmt != "v7":
        assert got["dir/fifo"][0].type is EntryType.FIFO
    if os.geteuid() == 0 and fmt != "v7":
        null = got["dir/null"][0]
        assert (null.type, null.devmajor, null.devminor) == (EntryType.CHAR, 1, 3)
        assert got["dir/loop"][0].type is EntryType.BLOCK
    if fmt in ("gnu", "pax"):
        deep = "L" * 120 + "/" + "M" * 120 + "/" + "N" * 90
        assert got[deep][1] == b"deep"
        if os.geteuid() == 0:
            assert (got["dir/file"][0].uid, got["dir/file"][0].gid) == (3_000_000, 4_000_000)


@pytest.mark.interop
def test_reads_tar_xattrs(tree: Path) -> None:
    target = tree / "dir" / "file"
    os.setxattr(target, "user.lamina", b"\x00\x01bin\xff")
    proc = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-cf", "-", "-C", tree, "dir"],
        capture_output=True,
        check=True,
    )
    got = by_name(read_all(proc.stdout))
    assert got["dir/file"][0].xattrs["user.lamina"] == b"\x00\x01bin\xff"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_python_tarfile(tree: Path, fmt: int) -> None:
    if fmt == tarfile.USTAR_FORMAT and os.geteuid() == 0:
        os.chown(tree / "dir" / "file", 0, 0)  # ustar cannot hold uid 3000000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        tf.add(tree / "dir", arcname="dir")
        if fmt != tarfile.USTAR_FORMAT:
            tf.add(tree / ("L" * 120), arcname="L" * 120)
            info = tarfile.TarInfo("big-uid")
            info.uid = 1 << 40
            info.mtime = 1_700_000_000.5
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"SCHILY.xattr.user.k": "v"}
            tf.addfile(info, io.BytesIO(b""))
    raw = buf.getvalue()
    assert len(raw) % 10240 == 0  # tarfile pads to records: read to EOF regardless
    got = by_name(read_all(raw))
    assert got["dir/file"][1] == b"hello\n" * 1000
    assert got["dir/hard"][0].type is EntryType.HARDLINK
    if fmt != tarfile.USTAR_FORMAT:
        big = got["big-uid"][0]
        assert big.uid == 1 << 40
        if fmt == tarfile.PAX_FORMAT:
            assert big.mtime_ns == 1_700_000_000_500_000_000
            assert big.xattrs["user.k"] == b"v"


def writer_items() -> list[tuple[Entry, bytes]]:
    deep = "/".join(["dir"] + ["d" * 100] * 3)
    return [
        (Entry("dir", EntryType.DIR, mode=0o755, mtime_ns=1_600_000_000 * 10**9), b""),
        f("dir/file", b"content\n", mode=0o640, uid=1000, gid=1000, xattrs={"user.a": b"1"}),
        (Entry("dir/hard", EntryType.HARDLINK, linkname="dir/file"), b""),
        (Entry("dir/sym", EntryType.SYMLINK, mode=0o777, linkname="/" + "s" * 300), b""),
        (Entry("dir/fifo", EntryType.FIFO, mode=0o600), b""),
        (Entry(deep, EntryType.DIR, mode=0o700), b""),
        f(deep + "/ünïcödé-" + "x" * 150, b"deep\n", mode=0o4755),
        (Entry("dir/hard2", EntryType.HARDLINK, linkname=deep + "/ünïcödé-" + "x" * 150), b""),
    ]


@pytest.mark.interop
def test_gnu_tar_lists_and_extracts_our_output(tmp_path: Path) -> None:
    items = writer_items()
    data = write_tar(items)
    listing = subprocess.run(
        ["tar", "-tf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()
    names = [n.rstrip("/") for n in listing.splitlines()]
    assert names == [e.name for e, _ in items]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=user.*", "-xpf", "-", "-C", str(out)],
        input=data,
        check=True,
        capture_output=True,
    )
    deep_file = out / items[6][0].name
    assert deep_file.read_bytes() == b"deep\n"
    assert stat.S_IMODE(deep_file.stat().st_mode) == 0o4755
    assert os.readlink(out / "dir" / "sym") == "/" + "s" * 300
    assert os.stat(out / "dir" / "hard").st_ino == os.stat(out / "dir" / "file").st_ino
    assert os.stat(out / "dir" / "hard2").st_ino == deep_file.stat().st_ino
    assert stat.S_ISFIFO(os.lstat(out / "dir" / "fifo").st_mode)
    assert os.getxattr(out / "dir" / "file", "user.a") == b"1"
    assert int(os.stat(out / "dir").st_mtime) == 1_600_000_000
    if os.geteuid() == 0:
        st_file = os.stat(out / "dir" / "file")
        assert (st_file.st_uid, st_file.st_gid) == (1000, 1000)


@pytest.mark.interop
def test_gnu_tar_accepts_pax_numbers(tmp_path: Path) -> None:
    items = [f("f", b"x", uid=5_000_000, gid=6_000_000, mtime_ns=-86400 * 10**9, uname="u" * 40)]
    proc = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", "-"],
        input=write_tar(items),
        capture_output=True,
        check=True,
    )
    line = proc.stdout.decode()
    assert "5000000/6000000" in line and "1969-12-31" in line


def test_python_tarfile_reads_our_output() -> None:
    items = writer_items()
    with tarfile.open(fileobj=io.BytesIO(write_tar(items)), mode="r:") as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [e.name for e, _ in items]
        assert members[1].pax_headers.get("SCHILY.xattr.user.a") == "1"


def pipe_stream(data: bytes) -> Iterator[io.BufferedReader]:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(data)

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as stream:
        yield stream  # type: ignore[misc]
    t.join()


def test_reads_from_a_pipe() -> None:
    payload = os.urandom(3 << 20)
    data = write_tar([f("a", payload), f("b", b"tail")])
    for stream in pipe_stream(data):
        got = read_all(stream)  # type: ignore[arg-type]
    assert [d for _, d in got] == [payload, b"tail"]
