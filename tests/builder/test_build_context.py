"""COPY/ADD source selection in a build context or a rootfs, and the content checksum."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from helpers.tree import Dir, Fifo, File, Symlink, build_tree
from lamina.builder.files.context import DIR, FILE, SYMLINK, checksum, select
from lamina.builder.files.ignore import IgnoreMatcher
from lamina.errors import NotFound, Unsafe, Unsupported

NO_IGNORE = IgnoreMatcher.parse("")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    build_tree(
        root,
        {
            "Dockerfile": File(b"FROM scratch\n"),
            "a.txt": File(b"a\n"),
            "b.txt": File(b"b\n", mode=0o600),
            "c.md": File(b"c\n"),
            "src/main.go": File(b"package main\n"),
            "src/util/u.go": File(b"package util\n"),
            "src/util/u_test.go": File(b"package util\n"),
            "src/README.md": File(b"readme\n"),
            "docs/x.md": File(b"x\n"),
            "bin/": Dir(mode=0o750),
            "bin/tool": File(b"#!/bin/sh\n", mode=0o755),
            "link-to-a": Symlink("a.txt"),
            "src/link-up": Symlink("../a.txt"),
            "dirlink": Symlink("src/util"),
        },
    )
    return root


def targets(sources: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(s.target, s.kind, s.relpath) for s in sources]


# (source words, expected (target, kind) in order)
SELECT_CASES = [
    (["a.txt"], [("a.txt", FILE)]),
    (["/a.txt"], [("a.txt", FILE)]),  # a leading "/" is the context root
    (["./src/../a.txt"], [("a.txt", FILE)]),
    (["*.txt"], [("a.txt", FILE), ("b.txt", FILE)]),
    (["?.md"], [("c.md", FILE)]),
    (["[ab].txt"], [("a.txt", FILE), ("b.txt", FILE)]),
    (["src/*/*.go"], [("u.go", FILE), ("u_test.go", FILE)]),
    (
        ["src/util"],
        [("", DIR), ("u.go", FILE), ("u_test.go", FILE)],
    ),
    (
        ["bin", "a.txt"],
        [("", DIR), ("tool", FILE), ("a.txt", FILE)],
    ),
    # a source path is followed through symlinks; the name is the one written
    (["link-to-a"], [("link-to-a", FILE)]),
    (["dirlink"], [("", DIR), ("u.go", FILE), ("u_test.go", FILE)]),
    (["dirlink/u.go"], [("u.go", FILE)]),
]


@pytest.mark.parametrize(("words", "want"), SELECT_CASES)
def test_select(ctx: Path, words: list[str], want: list[tuple[str, str]]) -> None:
    got = select(str(ctx), words, ignore=NO_IGNORE)
    assert [(s.target, s.kind) for s in got] == want
    assert all(s.top == (s.target == "" or "/" not in s.target) for s in got if s.top)


def test_dir_walk_keeps_symlinks_as_symlinks(ctx: Path) -> None:
    got = {s.target: s for s in select(str(ctx), ["src"], ignore=NO_IGNORE)}
    assert got["link-up"].kind == SYMLINK and got["link-up"].linkname == "../a.txt"
    assert got[""].top and not got["main.go"].top
    assert got["util/u.go"].relpath == "src/util/u.go"


def test_modes_and_sizes(ctx: Path) -> None:
    got = {s.target: s for s in select(str(ctx), ["bin", "b.txt"], ignore=NO_IGNORE)}
    assert got[""].mode == 0o750 and got["tool"].mode == 0o755 and got["b.txt"].mode == 0o600
    assert got["b.txt"].size == 2


def test_whole_context(ctx: Path) -> None:
    got = select(str(ctx), ["."], ignore=IgnoreMatcher.parse("docs\n*.md\n!src/README.md"))
    names = {s.target for s in got}
    assert "docs" not in names and "docs/x.md" not in names and "c.md" not in names
    assert "src/README.md" in names and "Dockerfile" in names and "" in names


def test_ignored_dir_with_exception_keeps_the_parent(ctx: Path) -> None:
    got = select(str(ctx), ["."], ignore=IgnoreMatcher.parse("src\n!src/util/u.go"))
    names = [s.target for s in got]
    assert "src/util/u.go" in names
    assert names.index("src") < names.index("src/util") < names.index("src/util/u.go")
    assert "src/main.go" not in names and "src/util/u_test.go" not in names


def test_ignored_source_is_missing(ctx: Path) -> None:
    with pytest.raises(NotFound, match=r"file not found in build context: a\.txt"):
        select(str(ctx), ["a.txt"], ignore=IgnoreMatcher.parse("a.txt"))
    with pytest.raises(NotFound):
        select(str(ctx), ["src/main.go"], ignore=IgnoreMatcher.parse("src"))
    # the Dockerfile can be hidden from COPY
    with pytest.raises(NotFound):
        select(str(ctx), ["Dockerfile"], ignore=IgnoreMatcher.parse("Dockerfile"))


@pytest.mark.parametrize("word", ["missing.txt", "*.nothing", "src/*/nope", "a.txt/x"])
def test_missing_sources_are_errors(ctx: Path, word: str) -> None:
    with pytest.raises(
        NotFound, match=re.escape(f"COPY failed: file not found in build context: {word}")
    ):
        select(str(ctx), [word], ignore=NO_IGNORE)


@pytest.mark.parametrize("word", ["../outside", "..", "src/../../x", "/../x"])
def test_dotdot_escapes_are_refused(ctx: Path, word: str) -> None:
    with pytest.raises(Unsafe) as info:
        select(str(ctx), [word], ignore=NO_IGNORE, instruction="ADD")
    assert word in str(info.value) and "ADD" in str(info.value)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "src/../../outside"])
def test_context_symlink_pointing_outside_is_refused(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside").write_text("secret")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "src").mkdir()
    os.symlink(target, ctx / "evil")
    with pytest.raises(Unsafe, match="points outside the build context"):
        select(str(ctx), ["evil"], ignore=NO_IGNORE)
    with pytest.raises(Unsafe):
        select(str(ctx), ["evil/x"], ignore=NO_IGNORE)
    # inside a copied directory it is only a symlink value: copied, never followed
    got = select(str(ctx), ["."], ignore=NO_IGNORE)
    assert any(s.target == "evil" and s.kind == SYMLINK for s in got)


def test_rootfs_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    host = tmp_path / "hostfile"
    host.write_text("host secret")
    rootfs = tmp_path / "rootfs"
    build_tree(
        rootfs,
        {
            "hostfile": File(b"in-root"),
            "abs": Symlink("/hostfile"),  # absolute: restarts at the rootfs
            "up": Symlink("../../../../hostfile"),  # ".." stops at the rootfs
            "usr/bin/tool": File(b"tool"),
            "bin": Symlink("usr/bin"),
        },
    )
    got = select(str(rootfs), ["/abs", "/up", "/bin/tool"], parents=False)
    assert [(s.target, s.relpath) for s in got] == [
        ("abs", "hostfile"),
        ("up", "hostfile"),
        ("tool", "usr/bin/tool"),
    ]
    assert (rootfs / "hostfile").read_text() == "in-root" != host.read_text()


def test_rootfs_absolute_link_to_missing_in_root_path(tmp_path: Path) -> None:
    host = tmp_path / "secret"
    host.write_text("host secret")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(host), rootfs / "evil")
    with pytest.raises(NotFound, match="source image"):
        select(str(rootfs), ["/evil"])


def test_rootfs_wildcards_cross_symlinked_dirs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    build_tree(
        rootfs,
        {
            "usr/lib/libz.so.1": File(b"z"),
            "usr/lib/libc.so.6": File(b"c"),
            "lib": Symlink("/usr/lib"),
            "loop": Symlink("loop2"),
            "loop2": Symlink("/loop"),
        },
    )
    got = select(str(rootfs), ["/lib/*.so.*"])
    assert [(s.target, s.relpath) for s in got] == [
        ("libc.so.6", "usr/lib/libc.so.6"),
        ("libz.so.1", "usr/lib/libz.so.1"),
    ]
    with pytest.raises(Unsafe, match="too many symlinks"):
        select(str(rootfs), ["/loop"])


def test_context_symlink_loop_is_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    os.symlink("b", ctx / "a")
    os.symlink("a", ctx / "b")
    with pytest.raises(Unsafe, match="too many symlinks"):
        select(str(ctx), ["a"], ignore=NO_IGNORE)


def test_wildcards_do_not_see_ignored_files(ctx: Path) -> None:
    ignore = IgnoreMatcher.parse("*.md\n**/*.md\n!src/*.md")
    got = select(str(ctx), ["*/*.md"], ignore=ignore)
    assert [s.relpath for s in got] == ["src/README.md"]  # not docs/x.md
    with pytest.raises(NotFound):  # only ignored files match: as if nothing did
        select(str(ctx), ["*.md"], ignore=ignore)


def test_special_files_are_refused_sockets_skipped(tmp_path: Path) -> None:
    import socket

    ctx = tmp_path / "ctx"
    build_tree(ctx, {"d/fifo": Fifo(), "e/ok": File(b"ok")})
    with pytest.raises(Unsupported, match="special file"):
        select(str(ctx), ["d"], ignore=NO_IGNORE)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ctx / "e" / "sock"))
        got = select(str(ctx), ["e"], ignore=NO_IGNORE)
        assert [s.target for s in got] == ["", "ok"]
    finally:
        sock.close()


# (words, excludes, expected targets)
EXCLUDE_CASES = [
    (["*.txt"], ["b*"], ["a.txt"]),
    (
        ["src"],
        ["*_test.go"],
        ["", "README.md", "link-up", "main.go", "util", "util/u.go", "util/u_test.go"],
    ),
    (["src"], ["**/*_test.go"], ["", "README.md", "link-up", "main.go", "util", "util/u.go"]),
    (["src"], ["util"], ["", "README.md", "link-up", "main.go"]),
    (["src"], ["util", "!util/u.go"], ["", "README.md", "link-up", "main.go", "util", "util/u.go"]),
]


@pytest.mark.parametrize(("words", "excludes", "want"), EXCLUDE_CASES)
def test_exclude(ctx: Path, words: list[str], excludes: list[str], want: list[str]) -> None:
    got = select(str(ctx), words, ignore=NO_IGNORE, excludes=excludes)
    assert [s.target for s in got] == want


# (words, expected targets with --parents)
PARENTS_CASES = [
    (["src/util/u.go"], ["src", "src/util", "src/util/u.go"]),
    (["src/*/*.go"], ["src", "src/util", "src/util/u.go", "src/util/u_test.go"]),
    (["./src/./util/u.go"], ["util", "util/u.go"]),
    (["src/./util"], ["util", "util/u.go", "util/u_test.go"]),
    (["a.txt", "bin"], ["a.txt", "bin", "bin/tool"]),
]


@pytest.mark.parametrize(("words", "want"), PARENTS_CASES)
def test_parents(ctx: Path, words: list[str], want: list[str]) -> None:
    got = select(str(ctx), words, ignore=NO_IGNORE, parents=True)
    assert [s.target for s in got] == want
    dirs = {s.target: s for s in got if s.kind == DIR}
    if "src" in dirs:
        assert dirs["src"].mode == 0o755


# ---------------------------------------------------------------------- checksum


def _sum(ctx: Path, words: list[str], **kw: str) -> str:
    return checksum(str(ctx), select(str(ctx), words, ignore=NO_IGNORE), **kw)


@pytest.mark.parametrize("cache", [False, True])
def test_checksum_ignores_mtime_and_sees_content_and_mode(
    ctx: Path, tmp_path: Path, cache: bool
) -> None:
    kw = {"cache_dir": str(tmp_path / "cache")} if cache else {}
    base = _sum(ctx, ["."], **kw)
    assert base.startswith("sha256:") and len(base) == 71
    assert _sum(ctx, ["."], **kw) == base
    # touch: same digest
    future = time.time() + 1000
    os.utime(ctx / "src" / "main.go", (future, future))
    assert _sum(ctx, ["."], **kw) == base
    # one byte edited (same size, mtime put back): different digest
    st = os.stat(ctx / "a.txt")
    (ctx / "a.txt").write_bytes(b"A\n")
    os.utime(ctx / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = _sum(ctx, ["."], **kw)
    assert edited != base
    # a mode change
    os.chmod(ctx / "a.txt", 0o755)
    moded = _sum(ctx, ["."], **kw)
    assert moded not in (base, edited)
    # a symlink target
    os.unlink(ctx / "link-to-a")
    os.symlink("b.txt", ctx / "link-to-a")
    assert _sum(ctx, ["."], **kw) not in (base, edited, moded)


def test_checksum_is_what_is_selected(ctx: Path) -> None:
    all_ = _sum(ctx, ["."])
    assert _sum(ctx, ["a.txt"]) != all_
    # an edit outside the selection does not matter
    before = _sum(ctx, ["src"])
    (ctx / "docs" / "x.md").write_text("changed\n")
    assert _sum(ctx, ["src"]) == before
    # an owner change does not matter (COPY makes files 0:0)
    os.chown(ctx / "src" / "main.go", 1234, 1234)
    assert _sum(ctx, ["src"]) == before
    # the same content under another name does
    os.rename(ctx / "src" / "main.go", ctx / "src" / "main2.go")
    assert _sum(ctx, ["src"]) != before


def test_stat_cache_is_used_for_unchanged_files(ctx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    time.sleep(0.2)  # files changed within a timestamp tick are not remembered
    first = _sum(ctx, ["."], cache_dir=str(cache))
    (path,) = cache.iterdir()
    data = json.loads(path.read_text())
    assert len(data["files"]) == 10  # every regular file of the context
    # Poison the cache: an unchanged file is not read again, so the digest follows it.
    data["files"] = {k: "0" * 64 for k in data["files"]}
    path.write_text(json.dumps(data))
    assert _sum(ctx, ["."], cache_dir=str(cache)) != first
    # A touched file has a new key (mtime, ctime): it is read, and its entry healed.
    os.utime(ctx / "a.txt")
    path.unlink()
    assert _sum(ctx, ["."], cache_dir=str(cache)) == first


def test_fresh_files_are_not_remembered(ctx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    future = time.time() + 3600  # newer than "now": within the racy window, surely
    for p in ctx.rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.utime(p, (future, future))
    _sum(ctx, ["."], cache_dir=str(cache))
    assert not cache.exists() or all(
        not json.loads(p.read_text())["files"] for p in cache.iterdir()
    )


def test_checksum_5000_files_is_fast(tmp_path: Path) -> None:
    ctx = tmp_path / "many"
    for d in range(50):
        sub = ctx / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}.txt").write_bytes(b"x" * (f + d))
    cache = str(tmp_path / "cache")
    t0 = time.perf_counter()
    sources = select(str(ctx), ["."], ignore=NO_IGNORE)
    t1 = time.perf_counter()
    cold = checksum(str(ctx), sources, cache_dir=cache)
    t2 = time.perf_counter()
    sources2 = select(str(ctx), ["."], ignore=NO_IGNORE)
    warm = checksum(str(ctx), sources2, cache_dir=cache)
    t3 = time.perf_counter()
    assert cold == warm and len(sources) == 5051
    # generous bounds for a shared 2-core machine; typical: ~0.1 s select, ~0.2 s hash
    assert t1 - t0 < 3 and t2 - t1 < 5 and t3 - t2 < 3
