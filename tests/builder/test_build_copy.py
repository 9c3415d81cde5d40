"""COPY semantics into a rootfs: destinations, owners, modes, and hostile rootfs symlinks."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.tree import Dir, File, Hardlink, Symlink, build_tree
from lamina.builder.files.chmod import parse_chmod
from lamina.builder.files.context import select
from lamina.builder.files.copy import CopyOptions, copy_into, resolve_chown
from lamina.builder.files.ignore import IgnoreMatcher
from lamina.errors import InvalidArgument, NotFound, Unsafe

NO_IGNORE = IgnoreMatcher.parse("")
PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\nbin:x:2:7:bin:/bin:/bin/sh\n"
    b"app:x:1000:1001::/home/app:/bin/sh\n"
)
GROUP = b"root:x:0:\nlp:x:7:\nappgrp:x:1001:\nmygrp:x:55:\n"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    build_tree(
        root,
        {
            "f.txt": File(b"hello\n", mode=0o640, uid=1234, gid=1234),
            "g.txt": File(b"g\n"),
            "run.sh": File(b"#!/bin/sh\n", mode=0o755),
            "dir/": Dir(mode=0o700),
            "dir/a": File(b"a\n"),
            "dir/sub/": Dir(mode=0o750),
            "dir/sub/b": File(b"b\n", mode=0o600),
            "dir/rel": Symlink("a"),
            "dir/abs": Symlink("/etc/passwd"),
            "dir/hard": Hardlink("dir/a"),
            ".wh.evil": File(b"x"),
        },
    )
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    build_tree(
        root,
        {
            "etc/passwd": File(PASSWD),
            "etc/group": File(GROUP),
            "usr/bin/": Dir(),
            "bin": Symlink("usr/bin"),
            "existing/": Dir(mode=0o711),
            "existing/sub/": Dir(mode=0o777),
            "afile": File(b"old"),
        },
    )
    return root


def copy(ctx: Path, root: Path, words: list[str], dest: str, **kw: object) -> int:
    parents = bool(kw.get("parents", False))
    excludes = tuple(kw.pop("excludes", ()))  # type: ignore[call-overload]
    sources = select(str(ctx), words, ignore=NO_IGNORE, parents=parents, excludes=excludes)
    return copy_into(str(ctx), sources, str(root), CopyOptions(dest, excludes=excludes, **kw))  # type: ignore[arg-type]


def meta(path: Path) -> tuple[str, int, int, int]:
    st = os.lstat(path)
    kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
    return kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


# (words, dest, workdir, expected {path: (kind, mode, uid, gid)})
DEST_CASES = [
    (["f.txt"], "/new", "/", {"new": ("f", 0o640, 0, 0)}),
    (["f.txt"], "/new/", "/", {"new": ("d", 0o755, 0, 0), "new/f.txt": ("f", 0o640, 0, 0)}),
    (["f.txt"], "/a/b/c", "/", {"a": ("d", 0o755, 0, 0), "a/b/c": ("f", 0o640, 0, 0)}),
    (["f.txt"], "rel/", "/work", {"work/rel/f.txt": ("f", 0o640, 0, 0)}),
    (["f.txt"], ".", "/work", {"work/f.txt": ("f", 0o640, 0, 0)}),
    (["f.txt"], "/existing", "/", {"existing/f.txt": ("f", 0o640, 0, 0)}),
    (["f.txt"], "/afile", "/", {"afile": ("f", 0o640, 0, 0)}),
    (["run.sh"], "/bin/", "/", {"usr/bin/run.sh": ("f", 0o755, 0, 0)}),  # /bin -> usr/bin
    (["run.sh"], "/bin", "/", {"usr/bin/run.sh": ("f", 0o755, 0, 0)}),
    (
        ["dir"],
        "/d",
        "/",
        {
            "d": ("d", 0o755, 0, 0),  # created, not the source dir's 0700 (as buildah)
            "d/a": ("f", 0o644, 0, 0),
            "d/sub": ("d", 0o750, 0, 0),
            "d/sub/b": ("f", 0o600, 0, 0),
            "d/rel": ("l", 0o777, 0, 0),
            "d/hard": ("f", 0o644, 0, 0),
        },
    ),
    # into an existing directory: it keeps its metadata, its subdirs take the copy's
    (
        ["dir"],
        "/existing",
        "/",
        {"existing": ("d", 0o711, 0, 0), "existing/sub": ("d", 0o750, 0, 0)},
    ),
    (["*.txt"], "/m/", "/", {"m/f.txt": ("f", 0o640, 0, 0), "m/g.txt": ("f", 0o644, 0, 0)}),
    (["f.txt", "dir"], "/m/", "/", {"m/f.txt": ("f", 0o640, 0, 0), "m/sub/b": ("f", 0o600, 0, 0)}),
]


@pytest.mark.parametrize(("words", "dest", "workdir", "want"), DEST_CASES)
def test_destinations(
    ctx: Path,
    rootfs: Path,
    words: list[str],
    dest: str,
    workdir: str,
    want: dict[str, tuple],  # type: ignore[type-arg]
) -> None:
    copy(ctx, rootfs, words, dest, workdir=workdir)
    for path, expected in want.items():
        assert meta(rootfs / path) == expected, path


def test_contents_and_symlinks(ctx: Path, rootfs: Path) -> None:
    n = copy(ctx, rootfs, ["dir"], "/d/")
    assert n == len(b"a\n") * 2 + len(b"b\n")
    assert (rootfs / "d/a").read_bytes() == b"a\n"
    assert os.readlink(rootfs / "d/rel") == "a"
    assert os.readlink(rootfs / "d/abs") == "/etc/passwd"  # copied, never followed
    # hardlinks become separate files
    assert os.stat(rootfs / "d/hard").st_ino != os.stat(rootfs / "d/a").st_ino
    # mtimes are kept
    assert os.stat(rootfs / "d/a").st_mtime_ns == os.stat(ctx / "dir/a").st_mtime_ns


@pytest.mark.parametrize(("words", "dest"), [(["f.txt", "g.txt"], "/x"), (["*.txt"], "/x")])
def test_several_sources_need_a_trailing_slash(
    ctx: Path, rootfs: Path, words: list[str], dest: str
) -> None:
    with pytest.raises(InvalidArgument, match="must be a directory and end with a /"):
        copy(ctx, rootfs, words, dest)
    assert not (rootfs / "x").exists()


def test_file_replaces_a_symlink_at_the_leaf(ctx: Path, rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    os.symlink(str(outside), rootfs / "leaf")
    copy(ctx, rootfs, ["f.txt"], "/leaf")
    assert outside.read_text() == "precious"
    assert meta(rootfs / "leaf")[0] == "f" and (rootfs / "leaf").read_text() == "hello\n"


@pytest.mark.parametrize("link", ["ABS", "../../../../../..", "/"])
def test_hostile_rootfs_symlinks_stay_inside(
    ctx: Path, rootfs: Path, tmp_path: Path, link: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = str(outside) if link == "ABS" else link
    shutil.rmtree(rootfs / "etc")
    os.symlink(target, rootfs / "etc")
    os.symlink(target, rootfs / "opt")
    copy(ctx, rootfs, ["f.txt"], "/etc/evil")
    copy(ctx, rootfs, ["dir"], "/opt/")
    assert list(outside.iterdir()) == []
    # and everything landed inside the rootfs
    found = [p for p in rootfs.rglob("evil")]
    assert found and all(str(p).startswith(str(rootfs) + "/") for p in found)


def test_chown_from_a_hostile_etc_is_read_inside(ctx: Path, rootfs: Path, tmp_path: Path) -> None:
    fake = tmp_path / "hostetc"
    fake.mkdir()
    (fake / "passwd").write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    shutil.rmtree(rootfs / "etc")
    os.symlink(str(fake), rootfs / "etc")  # resolves to <rootfs>/<tmp>/hostetc: missing
    with pytest.raises(NotFound, match="hostuser"):
        resolve_chown(str(rootfs), "hostuser")
    # a FIFO as /etc/passwd must not hang: it is refused
    os.unlink(rootfs / "etc")
    (rootfs / "etc").mkdir()
    os.mkfifo(rootfs / "etc/passwd")
    with pytest.raises(Unsafe, match="not a regular file"):
        resolve_chown(str(rootfs), "app")


# (--chown, (uid, gid))
CHOWN_CASES = [
    ("bin", (2, 7)),  # a name without group: its passwd group
    ("1", (1, 1)),  # a number without group: the same number
    ("2", (2, 2)),
    ("bin:mygrp", (2, 55)),
    ("app:appgrp", (1000, 1001)),
    ("10:11", (10, 11)),
    ("app:7", (1000, 7)),
    ("0:mygrp", (0, 55)),
]


@pytest.mark.parametrize(("spec", "ids"), CHOWN_CASES)
def test_chown(ctx: Path, rootfs: Path, spec: str, ids: tuple[int, int]) -> None:
    assert resolve_chown(str(rootfs), spec) == ids
    copy(ctx, rootfs, ["dir"], "/c/deep/", chown=spec)
    for path in ("c", "c/deep", "c/deep/a", "c/deep/sub", "c/deep/sub/b", "c/deep/rel"):
        st = os.lstat(rootfs / path)
        assert (st.st_uid, st.st_gid) == ids, path
    # an existing parent is not chowned
    copy(ctx, rootfs, ["f.txt"], "/existing/x/", chown=spec)
    assert meta(rootfs / "existing")[2:] == (0, 0)
    assert meta(rootfs / "existing/x")[2:] == ids


@pytest.mark.parametrize("spec", ["nobody", "bin:nogroup", "a:b:c", ":x", "bin:", "99999999999"])
def test_chown_errors(rootfs: Path, spec: str) -> None:
    with pytest.raises((NotFound, InvalidArgument)):
        resolve_chown(str(rootfs), spec)


# (--chmod, {path: mode})
CHMOD_CASES = [
    ("0755", {"d/a": 0o755, "d/sub": 0o755, "d/sub/b": 0o755}),
    ("644", {"d/a": 0o644, "d/sub": 0o644, "d/sub/b": 0o644}),
    ("u=rwX,go=rX", {"d/a": 0o644, "d/sub": 0o755, "d/sub/b": 0o644, "d/run.sh": 0o755}),
    ("+x", {"d/a": 0o755, "d/sub/b": 0o711}),
    ("a-w", {"d/a": 0o444, "d/sub/b": 0o400}),
    ("go=", {"d/a": 0o600, "d/sub": 0o700}),
    ("u+s", {"d/run.sh": 0o4755}),
]


@pytest.mark.parametrize(("spec", "want"), CHMOD_CASES)
def test_chmod(ctx: Path, rootfs: Path, spec: str, want: dict[str, int]) -> None:
    copy(ctx, rootfs, ["dir", "run.sh"], "/d/", chmod=spec)
    for path, mode in want.items():
        assert meta(rootfs / path)[1] == mode, (spec, path)


@pytest.mark.parametrize("bad", ["", "999", "u=q", "z+x", "12345", "rwx"])
def test_chmod_errors(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_chmod(bad)


def test_parents_and_exclude(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["dir/sub/b", "*.txt"], "/p/", parents=True)
    assert meta(rootfs / "p/dir") == ("d", 0o700, 0, 0)
    assert meta(rootfs / "p/dir/sub/b") == ("f", 0o600, 0, 0)
    assert (rootfs / "p/f.txt").is_file()
    copy(ctx, rootfs, ["dir"], "/e/", excludes=["sub", "rel"])
    assert sorted(os.listdir(rootfs / "e")) == ["a", "abs", "hard"]


def test_big_and_empty_files(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "big"
    ctx.mkdir()
    big = os.urandom(3 << 20) + b"tail"  # over SMALL_FILE: copy_file_range
    (ctx / "big.bin").write_bytes(big)
    (ctx / "empty").write_bytes(b"")
    (ctx / "edge").write_bytes(b"e" * (256 << 10))  # exactly SMALL_FILE
    n = copy(ctx, rootfs, ["big.bin", "empty", "edge"], "/b/")
    assert n == len(big) + (256 << 10)
    assert (rootfs / "b/big.bin").read_bytes() == big
    assert (rootfs / "b/empty").read_bytes() == b""
    assert (rootfs / "b/edge").read_bytes() == b"e" * (256 << 10)


@pytest.mark.parametrize(("dest", "workdir"), [("../../../x/", "/a/b"), ("/../../x/", "/")])
def test_dest_dotdot_stays_in_the_root(
    ctx: Path, rootfs: Path, tmp_path: Path, dest: str, workdir: str
) -> None:
    copy(ctx, rootfs, ["f.txt"], dest, workdir=workdir)
    assert (rootfs / "x/f.txt").read_bytes() == b"hello\n"
    assert not (tmp_path / "x").exists()


def test_whiteout_names_are_refused(ctx: Path, rootfs: Path) -> None:
    with pytest.raises(Unsafe, match="whiteout"):
        copy(ctx, rootfs, [".wh.evil"], "/x/")


def test_dir_over_file_and_file_over_dir(ctx: Path, rootfs: Path) -> None:
    (rootfs / "x").mkdir()
    (rootfs / "x/sub").write_text("a file where the copy has a dir")
    copy(ctx, rootfs, ["dir"], "/x/")
    assert (rootfs / "x/sub/b").read_bytes() == b"b\n"


# ---------------------------------------------------------------------- vs buildah


@pytest.mark.interop
@pytest.mark.slow
def test_same_tree_as_buildah(ctx: Path, tmp_path: Path) -> None:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    (ctx / ".wh.evil").unlink()
    (ctx / "dir/abs").unlink()
    (ctx / "passwd").write_bytes(PASSWD)
    (ctx / "group").write_bytes(GROUP)
    steps = [
        (["f.txt"], "/new/deep/file", {}),
        (["f.txt"], "/chown1/deep/", {"chown": "bin"}),
        (["f.txt"], "/chown2/", {"chown": "1"}),
        (["f.txt"], "/chown3/", {"chown": "bin:mygrp"}),
        (["dir"], "/dircopy", {}),
        (["dir"], "/octdir/", {"chmod": "0750"}),
        (["dir"], "/owned/", {"chown": "app:appgrp"}),
        (["*.txt", "run.sh"], "/multi/", {}),
        (["dir"], "/over/", {"chmod": "0700", "chown": "app"}),
        (["dir"], "/over/", {}),  # onto existing dirs: whose metadata wins?
        (["g.txt"], "/over/sub/b", {}),  # a file over a file
    ]
    lines = ["FROM scratch", "COPY passwd /etc/passwd", "COPY group /etc/group"]
    for words, dest, kw in steps:
        flags = "".join(f" --{k}={v}" for k, v in kw.items())
        lines.append(f"COPY{flags} {' '.join(words)} {dest}")
    (ctx / "Containerfile").write_text("\n".join(lines) + "\n")
    sd = ["--storage-driver", "overlay"]
    tag = f"lamina-copy-test-{os.getpid()}"
    subprocess.run(
        ["buildah", *sd, "build", "-q", "-f", str(ctx / "Containerfile"), "-t", tag, str(ctx)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    theirs = tmp_path / "theirs"
    cid = subprocess.run(
        ["buildah", *sd, "from", tag], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mnt = subprocess.run(
            ["buildah", *sd, "mount", cid], check=True, capture_output=True, text=True
        ).stdout.strip()
        shutil.copytree(mnt, theirs, symlinks=True)
        want = {str(p.relative_to(mnt)): meta(p) for p in Path(mnt).rglob("*")}
    finally:
        subprocess.run(["buildah", *sd, "rm", cid], capture_output=True, check=False)
        subprocess.run(["buildah", *sd, "rmi", tag], capture_output=True, check=False)

    ours = tmp_path / "ours"
    ours.mkdir()
    copy(ctx, ours, ["passwd"], "/etc/passwd")
    copy(ctx, ours, ["group"], "/etc/group")
    for words, dest, kw in steps:
        copy(ctx, ours, words, dest, **kw)
    got = {str(p.relative_to(ours)): meta(p) for p in ours.rglob("*")}
    assert got == want
    for rel, m in want.items():
        if m[0] == "f":
            assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel
