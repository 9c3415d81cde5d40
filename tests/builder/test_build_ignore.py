""".dockerignore semantics (Dockerfile reference, ".dockerignore file"; moby patternmatcher)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.builder.files.ignore import IgnoreMatcher, clean, glob_regex, load_ignore
from lamina.errors import InvalidArgument

# (dockerignore text, path, ignored?)
CASES = [
    # plain names, and a directory pattern taking its subtree
    ("foo", "foo", True),
    ("foo", "foo/bar/baz.txt", True),
    ("foo", "foobar", False),
    ("foo", "a/foo", False),
    # * and ? never cross a "/"
    ("*.md", "README.md", True),
    ("*.md", "docs/guide.md", False),
    ("*/*.md", "docs/guide.md", True),
    ("*/*.md", "a/b/guide.md", False),
    ("?.txt", "a.txt", True),
    ("?.txt", "ab.txt", False),
    # ** is any number of directories, zero included
    ("**/*.md", "README.md", True),
    ("**/*.md", "a/b/c/x.md", True),
    ("**/*.md", "a/b/c/x.mdx", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/c", False),
    ("a/**", "a/x/y", True),
    ("**", "anything/at/all", True),
    ("**/node_modules", "pkg/sub/node_modules/x.js", True),
    # character classes, negation, escapes
    ("file[0-9].txt", "file7.txt", True),
    ("file[0-9].txt", "filex.txt", False),
    ("file[^0-9].txt", "filex.txt", True),
    ("file[^0-9].txt", "file1.txt", False),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    # cleaning: leading "/", "./", "..", trailing "/", white space
    ("/foo", "foo", True),
    ("./foo/", "foo/x", True),
    ("a/../b", "b", True),
    ("  spaced  ", "spaced", True),
    ("foo//bar", "foo/bar", True),
    # comments and blank lines
    ("# foo\n\nbar", "foo", False),
    ("# foo\n\nbar", "bar", True),
    # exceptions: the last matching line wins
    ("*.md\n!README.md", "README.md", False),
    ("*.md\n!README.md", "CHANGES.md", True),
    ("!README.md\n*.md", "README.md", True),
    ("docs\n!docs/keep.txt", "docs/keep.txt", False),
    ("docs\n!docs/keep.txt", "docs/other.txt", True),
    ("docs\n!docs/keep.txt\ndocs/keep.txt", "docs/keep.txt", True),
    ("**\n!src", "src/main.c", False),
    ("**\n!src", "other/main.c", True),
    ("!foo", "foo", False),
    # the Dockerfile and .dockerignore themselves can be ignored (hidden from COPY)
    ("Dockerfile\n.dockerignore", "Dockerfile", True),
    ("Dockerfile\n.dockerignore", ".dockerignore", True),
    # dotfiles get no special treatment
    ("*", ".hidden", True),
    ("", "x", False),
]


@pytest.mark.parametrize(("text", "path", "want"), CASES)
def test_ignored(text: str, path: str, want: bool) -> None:
    assert IgnoreMatcher.parse(text).ignored(path) is want


def test_root_is_never_ignored() -> None:
    m = IgnoreMatcher.parse("*\n**")
    assert not m.ignored("")
    assert not m.ignored(".")


# (dockerignore, dir, may contain something included?)
WALK_CASES = [
    ("docs", "docs", False),  # ignored, no exception anywhere: skip the subtree
    ("docs\n!docs/keep.txt", "docs", True),
    ("docs\n!docs/keep.txt", "other", True),  # not ignored at all
    ("docs\n!other/keep.txt", "docs", False),  # the exception is elsewhere
    ("**\n!src/**/*.c", "src", True),
    ("**\n!src/*.c", "lib", False),
    ("**\n!**/*.c", "lib/deep", True),  # "**" may reach anything
    ("a\n!a/b/c/d", "a/b", True),
    ("a\n!a/x/c/d", "a/b", False),
]


@pytest.mark.parametrize(("text", "reldir", "want"), WALK_CASES)
def test_may_contain_included(text: str, reldir: str, want: bool) -> None:
    assert IgnoreMatcher.parse(text).may_contain_included(reldir) is want


def test_may_contain_included_is_never_wrong_when_false(tmp_path: Path) -> None:
    """Whenever it says False, no path below the directory is included."""
    patterns = ["a", "!a/b/c", "a/b", "**/x", "!**/x/y", "!a/*/z"]
    paths = ["a/b/c", "a/b/c/d", "a/q/z", "a/b/x/y", "a/x/y", "a/b/q", "a/q/x/y/z"]
    for n in range(1, len(patterns) + 1):
        m = IgnoreMatcher.parse("\n".join(patterns[:n]))
        for p in paths:
            parts = p.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if not m.may_contain_included(d):
                    assert m.ignored(p), (patterns[:n], d, p)


def test_bad_patterns_are_refused() -> None:
    for bad in ("[", "a[", "[]", "a\\", "[z-a]"):
        with pytest.raises(InvalidArgument):
            IgnoreMatcher.parse(bad)


def test_clean_is_go_filepath_clean() -> None:
    assert clean("") == "."
    assert clean("a/./b/../c/") == "a/c"
    assert clean("/../a") == "/a"
    assert clean("../../a") == "../../a"
    assert clean("//a//b") == "/a/b"


def test_glob_regex_star_does_not_cross_slash() -> None:
    import re

    rx = re.compile(glob_regex("*.go"))
    assert rx.fullmatch("main.go")
    assert not rx.fullmatch("cmd/main.go")


def test_patterns_property_keeps_order_and_bang() -> None:
    assert IgnoreMatcher.parse("/a/\n!b\n# c\n").patterns == ("a", "!b")


def test_load_ignore_prefers_dockerfile_specific_file(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / ".dockerignore").write_text("general\n")
    (ctx / "sub" / "app.Dockerfile").write_text("FROM scratch\n")
    (ctx / "sub" / "app.Dockerfile.dockerignore").write_text("specific\n")
    m = load_ignore(str(ctx), str(ctx / "sub" / "app.Dockerfile"))
    assert m.ignored("specific") and not m.ignored("general")
    # no specific file: the context's .dockerignore
    m2 = load_ignore(str(ctx), str(ctx / "Dockerfile"))
    assert m2.ignored("general") and not m2.ignored("specific")
    # a relative -f is also looked up inside the context
    m3 = load_ignore(str(ctx), "sub/app.Dockerfile")
    assert m3.ignored("specific")
    # no file at all: nothing ignored
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not load_ignore(str(empty), None).ignored("anything")


def test_dockerignore_ignoring_itself_is_still_read(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text(".dockerignore\nDockerfile\nsecret\n")
    m = load_ignore(str(tmp_path), None)
    assert m.ignored(".dockerignore") and m.ignored("Dockerfile") and m.ignored("secret")


_COMPONENTS = ["a", "b", "x", "*", "?", "**", "[ab]", "a*"]
_NAMES = ["a", "b", "x", "ab"]


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(
        st.tuples(st.booleans(), st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=3)),
        min_size=1,
        max_size=5,
    ),
    path=st.lists(st.sampled_from(_NAMES), min_size=2, max_size=5),
)
def test_may_contain_included_property(
    patterns: list[tuple[bool, list[str]]], path: list[str]
) -> None:
    """may_contain_included(d) False => every path below d is ignored (the walker may
    skip d); and a directory that is not ignored always may contain included paths."""
    text = "\n".join(("!" if bang else "") + "/".join(parts) for bang, parts in patterns)
    m = IgnoreMatcher.parse(text)
    full = "/".join(path)
    for i in range(1, len(path)):
        d = "/".join(path[:i])
        if not m.ignored(d):
            assert m.may_contain_included(d)
        if not m.may_contain_included(d):
            assert m.ignored(full), (text, d, full)


@pytest.mark.interop
@pytest.mark.slow
def test_same_selection_as_buildah(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess

    from lamina.builder.files.context import select

    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    ctx = tmp_path / "ctx"
    files = [
        "README.md",
        "CHANGES.md",
        "docs/a.md",
        "docs/keep.txt",
        "docs/sub/deep.txt",
        "src/main.c",
        "src/x.md",
        "src/node_modules/p/index.js",
        "node_modules/q.js",
        "a/b/c.md",
        "a/c.md",
        "a/b/d.txt",
        "tmp1.log",
        "sub/tmp2.log",
        ".git/HEAD",
        "Containerfile",
    ]
    for name in files:
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(name)
    ignore_text = (
        "# comment\n*.md\n!README.md\ndocs\n!docs/keep.txt\n**/node_modules\n"
        "a/**/c.md\n/tmp?.log\n.git\nContainerfile\n.dockerignore\n"
    )
    (ctx / ".dockerignore").write_text(ignore_text)
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    sd = ["--storage-driver", "overlay"]
    tag = f"lamina-ignore-test-{os.getpid()}"
    subprocess.run(
        ["buildah", *sd, "build", "-q", "-f", str(ctx / "Containerfile"), "-t", tag, str(ctx)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    cid = subprocess.run(
        ["buildah", *sd, "from", tag], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mnt = Path(
            subprocess.run(
                ["buildah", *sd, "mount", cid], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        theirs = sorted(
            str(p.relative_to(mnt / "ctx")) for p in (mnt / "ctx").rglob("*") if p.is_file()
        )
    finally:
        subprocess.run(["buildah", *sd, "rm", cid], capture_output=True, check=False)
        subprocess.run(["buildah", *sd, "rmi", tag], capture_output=True, check=False)
    ours = sorted(
        s.target
        for s in select(str(ctx), ["."], ignore=IgnoreMatcher.parse(ignore_text))
        if s.kind == "file"
    )
    assert ours == theirs
    # "*.md" is the top level only; "src/x.md" stays (Docker's rule, unlike .gitignore)
    want = ["README.md", "a/b/d.txt", "docs/keep.txt", "src/main.c", "src/x.md", "sub/tmp2.log"]
    assert ours == want
