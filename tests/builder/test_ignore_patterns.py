""".dockerignore patterns: moby patternmatcher's semantics, in linear time.

The tables are moby/patternmatcher's own cases (patternmatcher_test.go: TestMatches and
the filepath.Match cases it borrows), read as BuildKit reads them: ``exact`` is
MatchesExact (the path itself), ``parent`` is MatchesOrParentMatches (the path or a
parent directory), which is what :meth:`IgnoreMatcher.ignored` answers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lamina.builder.files.context import select
from lamina.builder.files.ignore import IgnoreMatcher, clean
from lamina.builder.files.pathglob import compile_ignore, compile_name
from lamina.errors import InvalidArgument

FAIL, EXACT, INEXACT = "fail", "exact", "inexact"

# (pattern, text, result) from moby's TestMatches
MOBY = [
    ("**", "file", EXACT),
    ("**", "file/", EXACT),
    ("**/", "file", EXACT),
    ("**/", "file/", EXACT),
    ("**", "/", EXACT),
    ("**/", "/", EXACT),
    ("**", "dir/file", EXACT),
    ("**/", "dir/file", EXACT),
    ("**", "dir/file/", EXACT),
    ("**/", "dir/file/", EXACT),
    ("**/**", "dir/file", EXACT),
    ("**/**", "dir/file/", EXACT),
    ("dir/**", "dir/file", EXACT),
    ("dir/**", "dir/file/", EXACT),
    ("dir/**", "dir/dir2/file", EXACT),
    ("dir/**", "dir/dir2/file/", EXACT),
    ("**/dir", "dir", EXACT),
    ("**/dir", "dir/file", INEXACT),
    ("**/dir2/*", "dir/dir2/file", EXACT),
    ("**/dir2/*", "dir/dir2/file/", INEXACT),
    ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
    ("**/dir2/**", "dir/dir2/dir3/file/", EXACT),
    ("**file", "file", EXACT),
    ("**file", "dir/file", EXACT),
    ("**/file", "dir/file", EXACT),
    ("**file", "dir/dir/file", EXACT),
    ("**/file", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file.txt", EXACT),
    ("**/file*txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt*", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt2", "dir/dir/file.txt", FAIL),
    ("**/*.txt", "file.txt", EXACT),
    ("**/**/*.txt", "file.txt", EXACT),
    ("a**/*.txt", "a/file.txt", EXACT),
    ("a**/*.txt", "a/dir/file.txt", EXACT),
    ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
    ("a/*.txt", "a/dir/file.txt", FAIL),
    ("a/*.txt", "a/file.txt", EXACT),
    ("a/*.txt**", "a/file.txt", EXACT),
    ("a[b-d]e", "ae", FAIL),
    ("a[b-d]e", "ace", EXACT),
    ("a[b-d]e", "aae", FAIL),
    ("a[^b-d]e", "aze", EXACT),
    (".*", ".foo", EXACT),
    (".*", "foo", FAIL),
    ("abc.def", "abcdef", FAIL),
    ("abc.def", "abc.def", EXACT),
    ("abc.def", "abcZdef", FAIL),
    ("abc?def", "abcZdef", EXACT),
    ("abc?def", "abcdef", FAIL),
    ("**/foo/bar", "foo/bar", EXACT),
    ("**/foo/bar", "dir/foo/bar", EXACT),
    ("**/foo/bar", "dir/dir2/foo/bar", EXACT),
    ("abc/**", "abc", FAIL),
    ("abc/**", "abc/def", EXACT),
    ("abc/**", "abc/def/ghi", EXACT),
    ("**/.foo", ".foo", EXACT),
    ("**/.foo", "bar.foo", FAIL),
    ("a(b)c/def", "a(b)c/def", EXACT),
    ("a(b)c/def", "a(b)c/xyz", FAIL),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        EXACT,
    ),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("a\\\\", "a\\", EXACT),
    ("a\\*b", "a*b", EXACT),
]

# (patterns, text, ignored?) from moby's multi-pattern cases
MOBY_MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (
        ["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        False,
    ),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
]

# Go's filepath.Match cases as moby runs them through Matches (path or a parent)
FILEPATH = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]

# malformed for filepath.Match, so refused by moby's New (ErrBadPattern)
BAD = ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a["]


@pytest.mark.parametrize(("pattern", "text", "result"), MOBY)
def test_moby_matches(pattern: str, text: str, result: str) -> None:
    glob = compile_ignore(clean(pattern))
    assert glob.fullmatch(text) is (result == EXACT)
    assert glob.match_or_parent(text) is (result != FAIL)
    if text.strip("/"):
        # the walker asks with clean relative paths
        assert IgnoreMatcher.parse(pattern).ignored(text) is (result != FAIL)


@pytest.mark.parametrize(("patterns", "text", "want"), MOBY_MULTI)
def test_moby_exceptions(patterns: list[str], text: str, want: bool) -> None:
    assert IgnoreMatcher.parse("\n".join(patterns)).ignored(text) is want


@pytest.mark.parametrize(("pattern", "text", "want"), FILEPATH)
def test_filepath_match_cases(pattern: str, text: str, want: bool) -> None:
    assert IgnoreMatcher.parse(pattern).ignored(text) is want


@pytest.mark.parametrize("pattern", BAD)
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidArgument, match="syntax error in pattern"):
        IgnoreMatcher.parse(pattern)


def test_moby_regex_details() -> None:
    # a negated class is a Go regex class in moby: it matches "/" too
    assert IgnoreMatcher.parse("a[^x]b").ignored("a/b")
    # Go's "." (in ** and a trailing **) does not match a newline in regex mode...
    assert not compile_ignore("**/x*").fullmatch("a\nb/xy")
    assert not compile_ignore("*/**").fullmatch("a/b\nc")
    # ...but prefix and suffix patterns are string tests
    assert compile_ignore("a/**").fullmatch("a/b\nc")
    assert compile_ignore("**/c").fullmatch("a\nb/c")
    # "**x" with no other magic is "ends with x", not "(.*/)?x"
    assert IgnoreMatcher.parse("**.go").ignored("cmd/main.go")
    assert not IgnoreMatcher.parse("**/*.go").ignored("cmd/main.gox")


def test_name_globs_are_filepath_match() -> None:
    assert compile_name("*.go").fullmatch("main.go")
    assert not compile_name("*.go").fullmatch("cmd/main.go")
    assert not compile_name("[^a]").fullmatch("/")
    assert compile_name("a\\[b").fullmatch("a[b")


# --------------------------------------------------------------------- linear time

HOSTILE = [
    "**/**/**/**/**/**/**/**/**/**/x",
    "a/**/b/**/c/**/d/**/e/**/f/**/g/**/h/**/i/**/j",
    "**/a/**/a/**/a/**/a/**/a/**/a/**/a/**/a/**/b",
    "*a*a*a*a*a*a*a*a*a*a*b",
    "**/*a*a*a*a*a*a*a*a*a*b/**/c",
    "**/?/**/?/**/?/**/?/**/?/**/?/**/?/**/z",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pattern", HOSTILE)
def test_hostile_patterns_are_linear(pattern: str) -> None:
    """Each of these takes minutes (or far longer) with a backtracking regex on a
    200-level path; an automaton answers every prefix in milliseconds."""
    m = IgnoreMatcher.parse(f"{pattern}\n!{pattern}/keep")
    paths = ["/".join(["a"] * d) + "/y" for d in range(1, 201)] + ["a" * 255]
    started = time.monotonic()
    assert not any(m.ignored(p) for p in paths)
    for p in paths[::20]:
        m.may_contain_included(p)
    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(60)
def test_deep_tree_with_hostile_ignore(tmp_path: Path) -> None:
    """A real 200-level context walked with hostile patterns, within a time bound; the
    selection is still right (the deep x is ignored, its sibling kept)."""
    ctx = tmp_path / "ctx"
    deep = ctx.joinpath(*(["a"] * 200))
    os.makedirs(deep)
    (deep / "x").write_text("ignored\n")
    (deep / "y").write_text("kept\n")
    (ctx / "a" / "x").write_text("ignored\n")
    ignore = IgnoreMatcher.parse("\n".join([*HOSTILE, "**/**/**/**/**/**/**/**/**/**/x"]))
    started = time.monotonic()
    sources = select(str(ctx), ["."], ignore=ignore)
    elapsed = time.monotonic() - started
    names = {s.relpath for s in sources}
    assert "/".join(["a"] * 200) + "/y" in names
    assert "/".join(["a"] * 200) + "/x" not in names and "a/x" not in names
    assert elapsed < 10.0, elapsed
