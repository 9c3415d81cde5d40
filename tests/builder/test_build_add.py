"""ADD: local archives extracted by content (securely, without whiteouts) and URLs."""

from __future__ import annotations

import bz2
import email.utils
import gzip
import hashlib
import http.server
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from lamina.builder.files.addurl import fetch_url, filename_for, url_checksum
from lamina.builder.files.context import select
from lamina.builder.files.copy import CopyOptions, add_into
from lamina.builder.files.ignore import IgnoreMatcher
from lamina.errors import DigestMismatch, InvalidArgument, InvalidFormat, NotFound, Unsafe

NO_IGNORE = IgnoreMatcher.parse("")


def make_tar(members: list[tuple[str, str, bytes | str]], *, uid: int = 0) -> bytes:
    """(name, kind f|d|l|h|c, data or link target) -> tar bytes, names written raw."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            info.mtime = 1_600_000_000
            data = b""
            if kind == "f":
                data = value if isinstance(value, bytes) else value.encode()
                info.size = len(data)
                info.mode = 0o640
            elif kind == "d":
                info.type = tarfile.DIRTYPE
                info.mode = 0o750
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = str(value)
            elif kind == "h":
                info.type = tarfile.LNKTYPE
                info.linkname = str(value)
                info.mode = 0o640  # as tar writes it: the mode of the shared inode
            elif kind == "c":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


GOOD = make_tar(
    [
        ("app/", "d", b""),
        ("app/main.py", "f", b"print('hi')\n"),
        ("app/link", "l", "main.py"),
        ("app/hard", "h", "app/main.py"),
        ("top.txt", "f", b"top\n"),
    ],
    uid=1234,
)

COMPRESSORS = {
    "plain": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "xz": lzma.compress,
    "bzip2": bz2.compress,
}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    return root


def add(ctx: Path, root: Path, words: list[str], dest: str, **kw: object) -> int:
    unpack = kw.pop("unpack", None)
    sources = select(str(ctx), words, ignore=NO_IGNORE, instruction="ADD")
    return add_into(str(ctx), sources, str(root), CopyOptions(dest, **kw), unpack=unpack)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_archives_are_extracted_by_content(tmp_path: Path, rootfs: Path, kind: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "archive.dat").write_bytes(COMPRESSORS[kind](GOOD))  # the name says nothing
    add(ctx, rootfs, ["archive.dat"], "/opt")
    assert (rootfs / "opt/app/main.py").read_bytes() == b"print('hi')\n"
    assert os.readlink(rootfs / "opt/app/link") == "main.py"
    st = os.stat(rootfs / "opt/app/hard")
    assert st.st_ino == os.stat(rootfs / "opt/app/main.py").st_ino  # a hardlink in the tar
    # owners and modes come from the archive, as Docker's ADD keeps them
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 1234, 0o640)
    assert stat.S_IMODE(os.stat(rootfs / "opt/app").st_mode) == 0o750
    assert os.stat(rootfs / "opt/top.txt").st_mtime == 1_600_000_000
    assert not (rootfs / "opt/archive.dat").exists()


def test_chown_applies_to_extracted_files(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.tar").write_bytes(GOOD)
    add(ctx, rootfs, ["a.tar"], "/opt/", chown="app")
    st = os.stat(rootfs / "opt/app/main.py")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.txt.gz", gzip.compress(b"just text, not a tar\n", mtime=0)),
        ("empty.tar", b""),
        ("zeros.tar", bytes(1024)),
        ("plain.txt", b"hello\n"),
        ("fake.tar", b"ustar" * 200),
    ],
    ids=["gz-text", "empty", "zeros", "text", "fake-tar"],
)
def test_non_archives_are_copied_as_files(
    tmp_path: Path, rootfs: Path, name: str, data: bytes
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / name).write_bytes(data)
    add(ctx, rootfs, [name], "/d/")
    assert (rootfs / "d" / name).read_bytes() == data


def test_unpack_false_copies_the_archive(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.tar.gz").write_bytes(gzip.compress(GOOD))
    add(ctx, rootfs, ["a.tar.gz"], "/d/", unpack=False)
    assert (rootfs / "d/a.tar.gz").read_bytes() == gzip.compress(GOOD)
    assert not (rootfs / "d/app").exists()


def test_archives_in_a_directory_source_are_not_extracted(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "dir").mkdir(parents=True)
    (ctx / "dir/a.tar").write_bytes(GOOD)
    (ctx / "b.tar").write_bytes(GOOD)
    add(ctx, rootfs, ["dir", "b.tar"], "/d/")
    assert (rootfs / "d/a.tar").read_bytes() == GOOD  # Docker: only top-level sources
    assert (rootfs / "d/app/main.py").exists()


# (members, what must hold afterwards)
HOSTILE = [
    ([("../evil", "f", b"x")], "refused"),
    ([("a/../../evil", "f", b"x")], "refused"),
    ([("app/.wh.main.py", "f", b"")], "refused"),
    ([(".wh..wh..opq", "f", b"")], "refused"),
    ([("x", "h", "../../etc/passwd")], "refused"),
    ([("/etc/passwd", "f", b"pwned")], "inside"),  # absolute: lands under the dest
    ([("x", "l", "/"), ("x/etc/passwd", "f", b"pwned")], "inside"),
    ([("x", "l", "../../../.."), ("x/etc/passwd", "f", b"pwned")], "inside"),
    ([("etc", "l", "/etc"), ("etc/passwd", "f", b"pwned")], "refused"),  # a loop in DEST
    ([("dev/null", "c", b"")], "skipped"),
]


@pytest.mark.parametrize(("members", "outcome"), HOSTILE)
def test_hostile_archives(
    tmp_path: Path, rootfs: Path, members: list[tuple[str, str, bytes | str]], outcome: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(make_tar(members))
    passwd = (rootfs / "etc/passwd").read_bytes()
    host_before = sorted(os.listdir(tmp_path))
    if outcome == "refused":
        with pytest.raises((Unsafe, InvalidFormat)):
            add(ctx, rootfs, ["evil.tar"], "/opt/")
    else:
        add(ctx, rootfs, ["evil.tar"], "/opt/")
    # never the image's /etc/passwd, never anything outside the rootfs
    assert (rootfs / "etc/passwd").read_bytes() == passwd
    assert sorted(os.listdir(tmp_path)) == host_before
    assert not (tmp_path / "evil").exists() and not (rootfs / "evil").exists()
    if outcome == "inside":
        assert (rootfs / "opt/etc/passwd").read_bytes() == b"pwned"
    if outcome == "skipped":
        assert not (rootfs / "opt/dev/null").exists()


def test_bomb_is_stopped(tmp_path: Path, rootfs: Path) -> None:
    from lamina.builder.files.archive import extract
    from lamina.errors import LimitExceeded
    from lamina.layers.api import Limits

    big = make_tar([("zeros", "f", bytes(8 << 20))])
    path = tmp_path / "bomb.tar.xz"
    path.write_bytes(lzma.compress(big))
    fd = os.open(path, os.O_RDONLY)
    dest = os.open(rootfs, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(LimitExceeded):
            extract(fd, "xz", dest, limits=Limits(max_layer_bytes=1 << 20))
    finally:
        os.close(fd)
        os.close(dest)


# ---------------------------------------------------------------------- URLs

PAYLOAD = b"#!/bin/sh\necho downloaded\n" * 100
LAST_MODIFIED = 1_500_000_000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        body = GOOD if self.path.endswith(".tar") else PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", email.utils.formatdate(LAST_MODIFIED, usegmt=True))
        if self.path.startswith("/dl"):
            self.send_header("Content-Disposition", 'attachment; filename="../named.sh"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_url(server: str, tmp_path: Path) -> None:
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch_url(f"{server}/files/tool.sh?x=1", str(tmp_path), checksum=good)
    assert path == str(tmp_path / "tool.sh")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == LAST_MODIFIED
    assert Path(path).read_bytes() == PAYLOAD
    assert url_checksum(path) == good == url_checksum(path, good)
    assert os.listdir(tmp_path) == ["tool.sh"]


def test_fetch_url_bad_checksum_leaves_nothing(server: str, tmp_path: Path) -> None:
    bad = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DigestMismatch, match="checksum mismatch"):
        fetch_url(f"{server}/tool.sh", str(tmp_path), checksum=bad)
    assert os.listdir(tmp_path) == []
    with pytest.raises(InvalidArgument):
        fetch_url(f"{server}/tool.sh", str(tmp_path), checksum="sha256:abc")
    with pytest.raises(NotFound):
        fetch_url(f"{server}/missing/x", str(tmp_path))
    with pytest.raises(InvalidArgument):
        fetch_url("file:///etc/passwd", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_fetch_url_names(server: str, tmp_path: Path) -> None:
    # Content-Disposition wins, reduced to a base name
    assert fetch_url(f"{server}/dl/whatever", str(tmp_path)) == str(tmp_path / "named.sh")
    assert filename_for("http://h/") == "index"
    assert filename_for("http://h/a/b%20c.tgz?q#f") == "b c.tgz"
    assert filename_for("http://h/a/..") == "index"


def test_downloaded_tar_is_copied_not_extracted(server: str, tmp_path: Path, rootfs: Path) -> None:
    dl = tmp_path / "dl"
    dl.mkdir()
    path = fetch_url(f"{server}/x/app.tar", str(dl))
    sources = select(str(dl), [os.path.basename(path)], context=True, instruction="ADD")
    add_into(str(dl), sources, str(rootfs), CopyOptions("/srv/"), unpack=False)
    st = os.stat(rootfs / "srv/app.tar")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == LAST_MODIFIED
    assert (rootfs / "srv/app.tar").read_bytes() == GOOD


# ---------------------------------------------------------------------- vs buildah


@pytest.mark.interop
@pytest.mark.slow
def test_same_tree_as_buildah(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (ctx / "rootfs.tar.xz").write_bytes(lzma.compress(GOOD))
    (ctx / "app.data").write_bytes(gzip.compress(GOOD, mtime=0))
    (ctx / "notes.txt.gz").write_bytes(gzip.compress(b"text\n", mtime=0))
    steps = [
        (["passwd"], "/etc/passwd", {}),
        (["rootfs.tar.xz"], "/opt", {}),
        (["app.data", "notes.txt.gz"], "/srv/", {}),
        # not compared: `ADD --chown` of an archive. BuildKit 0.23+ chowns the extracted
        # entries (moby/buildkit#1547) and lamina follows it; buildah 1.28 keeps the
        # archive's owners (test_chown_applies_to_extracted_files covers lamina's rule).
    ]
    lines = ["FROM scratch"]
    for words, dest, kw in steps:
        flags = "".join(f" --{k}={v}" for k, v in kw.items())
        lines.append(f"ADD{flags} {' '.join(words)} {dest}")
    (ctx / "Containerfile").write_text("\n".join(lines) + "\n")
    sd = ["--storage-driver", "overlay"]
    tag = f"lamina-add-test-{os.getpid()}"
    subprocess.run(
        ["buildah", *sd, "build", "-q", "-f", str(ctx / "Containerfile"), "-t", tag, str(ctx)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    cid = subprocess.run(
        ["buildah", *sd, "from", tag], check=True, capture_output=True, text=True
    ).stdout.strip()
    want: dict[str, tuple[object, ...]] = {}
    try:
        mnt = Path(
            subprocess.run(
                ["buildah", *sd, "mount", cid], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        for p in mnt.rglob("*"):
            st = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            want[str(p.relative_to(mnt))] = (st.st_mode, st.st_uid, st.st_gid, data)
    finally:
        subprocess.run(["buildah", *sd, "rm", cid], capture_output=True, check=False)
        subprocess.run(["buildah", *sd, "rmi", tag], capture_output=True, check=False)

    ours = tmp_path / "ours"
    ours.mkdir()
    for words, dest, kw in steps:
        add(ctx, ours, words, dest, **kw)
    got: dict[str, tuple[object, ...]] = {}
    for p in ours.rglob("*"):
        st = os.lstat(p)
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        got[str(p.relative_to(ours))] = (st.st_mode, st.st_uid, st.st_gid, data)
    assert got == want
