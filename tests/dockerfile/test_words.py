"""Variable substitution and word splitting (Dockerfile reference, "Environment
replacement"), including the pattern modifiers and the backtick escape."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.dockerfile.instructions import Location, ParseError
from lamina.dockerfile.words import (
    expand,
    expand_at,
    expand_heredoc,
    expand_pairs,
    expand_words,
    glob_regex,
    split_raw,
)
from lamina.errors import InvalidArgument

ENV = {
    "A": "apple",
    "E": "",
    "S": "one two",
    "F": "archive.tar.gz",
    "P": "/usr/local/bin",
    "X": "foo-bar-foo",
    "\uc548\ub155": "hello",
    "\u00e9t\u00e9": "summer",
}

WORDS: list[tuple[str, str]] = [
    ("plain", "plain"),
    ("$A", "apple"),
    ("${A}", "apple"),
    ("x${A}y", "xappley"),
    ("$A.txt", "apple.txt"),
    ("$UNSET", ""),
    ("'$A'", "$A"),
    ('"$A"', "apple"),
    ('"a b"', "a b"),
    ("a\\ b", "a b"),
    ("\\$A", "$A"),
    ("\\${A}", "${A}"),
    ('"\\$A"', "$A"),
    ('"a\\nb"', "a\\nb"),
    ("$", "$"),
    ("${A:-d}", "apple"),
    ("${E:-d}", "d"),
    ("${E-d}", ""),
    ("${U-d}", "d"),
    ("${U:-$A}", "apple"),
    ("${U:-a b}", "a b"),
    ("${A:+alt}", "alt"),
    ("${E:+alt}", ""),
    ("${E+alt}", "alt"),
    ("${U+alt}", ""),
    ("${A:?msg}", "apple"),
    # pattern modifiers (BuildKit 1.x "labs" and later stable)
    ("${F#*.}", "tar.gz"),
    ("${F##*.}", "gz"),
    ("${F%.*}", "archive.tar"),
    ("${F%%.*}", "archive"),
    ("${P#/usr}", "/local/bin"),
    ("${P#nomatch}", "/usr/local/bin"),
    ("${P%/*}", "/usr/local"),
    ("${P##*/}", "bin"),
    ("${X/foo/baz}", "baz-bar-foo"),
    ("${X//foo/baz}", "baz-bar-baz"),
    ("${X//foo}", "-bar-"),
    ("${X/b?r/q}", "foo-q-foo"),
    ("${X/[fb]oo/z}", "z-bar-foo"),
    ("${U#x}", ""),
    ("${F#$A}", "archive.tar.gz"),
    ("${F%.${U:-gz}}", "archive.tar"),
    # positional and special parameters are never set
    ("x$1y", "xy"),
    ("$12ab", "ab"),
    ("${3:-three}", "three"),
    ("${007}z", "z"),
    ("$@", ""),
    ("$##", "#"),
    ("a$?b", "ab"),
    ("${!:-bang}", "bang"),
    ("$$", ""),
    ("$.", "$."),
    ("a$/b", "a$/b"),
    ("$\uc548\ub155!", "hello!"),
    ("${\u00e9t\u00e9}", "summer"),
    # braces
    ("${A}}", "apple}"),
    ("${U:-x {y}", "x {y"),
    ("${U:-\\${A}z}", "${Az}"),
    ("${U:-${V:-deep}}", "deep"),
    ("${A:+${U}}", ""),
    ('"it\'s $A"', "it's apple"),
    ("'a\\'", "a\\"),
]


@pytest.mark.parametrize(("word", "expected"), WORDS)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


def test_backtick_escape() -> None:
    assert expand("`$A", ENV, escape="`") == "$A"
    assert expand("a\\b", ENV, escape="`") == "a\\b"
    assert expand('"`"q`""', ENV, escape="`") == '"q"'
    assert expand_words("a` b c", ENV, escape="`") == ["a b", "c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b  c", ["a", "b", "c"]),
        ("$S", ["one", "two"]),
        ('"$S"', ["one two"]),
        ("80/tcp ${S}", ["80/tcp", "one", "two"]),
        ("'a b' \"c d\"", ["a b", "c d"]),
        ("$E", []),
        ('""', [""]),
    ],
)
def test_expand_words(text: str, expected: list[str]) -> None:
    assert expand_words(text, ENV) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${U:?must be set}", "U: must be set"),
        ("${U?}", "U: is not set or empty"),
        ("${A", "missing '}'"),
        ("${}", "no variable name"),
        ("${A:=x}", "unsupported modifier"),
        ("${A:B}", "unsupported modifier"),
        ("${{A}", "no variable name"),
        ("${.}", "no variable name"),
        ("${U:-a ${A}", "missing '}'"),
        ("it'", "single quote"),
        ("a\\\\'b", "single quote"),
        ('"a\\"', "double quote"),
        ("'open", "single quote"),
        ('"open', "double quote"),
    ],
)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("?", r"\?")):
        expand(word, ENV)


def test_env_uses_old_values() -> None:
    # ENV abc=bye def=$abc: def gets the value abc had *before* this instruction.
    env = {"abc": "hello"}
    assert expand_pairs((("abc", "bye"), ("def", "$abc")), env) == [
        ("abc", "bye"),
        ("def", "hello"),
    ]
    assert env == {"abc": "hello"}
    assert expand_pairs((("k", '"a b"'), ("$abc", "x")), env) == [("k", "a b"), ("hello", "x")]


def test_split_raw_keeps_quotes_and_offsets() -> None:
    assert split_raw("a=\"b c\" d\\ e  'f g'") == [(0, 'a="b c"'), (8, "d\\ e"), (14, "'f g'")]
    assert split_raw("a` b c", escape="`") == [(0, "a` b"), (5, "c")]
    assert split_raw("   ") == []


def test_glob_regex() -> None:
    assert glob_regex("*.t?z") == ".*\\.t.z"
    assert glob_regex("[!a]") == "[^a]"
    assert glob_regex("\\*") == "\\*"
    assert re.fullmatch(glob_regex("[]]"), "]")
    assert re.fullmatch(glob_regex("[!]]"), "a") and not re.fullmatch(glob_regex("[!]]"), "]")
    assert re.fullmatch(glob_regex("[]"), "[]")  # never closed: literal
    assert re.fullmatch(glob_regex("[a-c]x"), "bx")
    assert re.fullmatch(glob_regex("[[]"), "[")
    assert re.fullmatch(glob_regex("[\\]"), "\\")


def test_expand_at_points_at_the_instruction() -> None:
    where = Location("Dockerfile", 7, 3)
    assert expand_at(where, "${A}", ENV) == "apple"
    with pytest.raises(ParseError, match=r"^Dockerfile:7:3: NEED: set it$") as info:
        expand_at(where, "${NEED:?set it}", ENV)
    assert info.value.location == where


# Pattern modifiers against the real bash (the semantics Dockerfile borrows).
BASH_CASES = [
    ("archive.tar.gz", "${v#*.}"),
    ("archive.tar.gz", "${v##*.}"),
    ("archive.tar.gz", "${v%.*}"),
    ("archive.tar.gz", "${v%%.*}"),
    ("/usr/local/bin", "${v#/usr}"),
    ("/usr/local/bin", "${v##*/}"),
    ("/usr/local/bin", "${v%/*}"),
    ("aaa", "${v#a*}"),
    ("aaa", "${v##a*}"),
    ("abcabc", "${v%b*}"),
    ("abcabc", "${v%%b*}"),
    ("foo-bar-foo", "${v/foo/baz}"),
    ("foo-bar-foo", "${v//foo/baz}"),
    ("foo-bar-foo", "${v//o}"),
    ("foo-bar-foo", "${v/b?r/Q}"),
    ("foo-bar-foo", "${v//[fb]/_}"),
    ("foo-bar-foo", "${v/o*/X}"),
    ("xyz", "${v#nomatch}"),
    ("", "${v:-default}"),
    ("", "${v-default}"),
    ("set", "${v:+alt}"),
    ("a]b", "${v/[]]/X}"),
    ("x[y", "${v/[[]/X}"),
    ("abc", "${v//[!b]/.}"),
    ("a-b", "${v/[a-]/_}"),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(("value", "word"), BASH_CASES)
def test_pattern_modifiers_match_bash(value: str, word: str) -> None:
    script = f'v={shlex.quote(value)}; printf %s "{word}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert expand(word, {"v": value}) == out.stdout


_WORD_PIECES = st.sampled_from(
    [*"ab$'\"\\{}:-+?#%/*[]!^` ", "${", "${A", "A", "B", "##", "%%", "//", "é", "²"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORD_PIECES, max_size=16), st.sampled_from(["\\", "`"]))
def test_fuzz_expand_raises_only_invalid_argument(pieces: list[str], escape: str) -> None:
    word = "".join(pieces)
    try:
        one = expand(word, {"A": "a*b/c.d", "B": ""}, escape=escape)
        many = expand_words(word, {"A": "a*b/c.d", "B": ""}, escape=escape)
    except InvalidArgument:
        return
    assert isinstance(one, str) and all(isinstance(w, str) for w in many)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('echo "hello ${FOO}"\n', 'echo "hello bar"\n'),  # the reference's example
        ("plain $FOO and ${FOO:-x}\n", "plain bar and bar\n"),
        ("keep \\$FOO\n", "keep \\$FOO\n"),
        ("keep '$FOO' as is\n", "keep '$FOO' as is\n"),
        ('"a\\"$FOO"\n', '"a\\"bar"\n'),
        ("back\\slash\n", "back\\slash\n"),
        ("end\\", "end\\"),
        ("${UNSET}|$UNSET|\n", "||\n"),
    ],
)
def test_expand_heredoc_keeps_quotes_and_escapes(content: str, expected: str) -> None:
    assert expand_heredoc(content, {"FOO": "bar"}) == expected


@pytest.mark.parametrize("word", ["${A/[z-a]/x}", "${A#[/-!]}", "${A%%[9-0]*}"])
def test_a_pattern_with_a_reversed_range_is_an_error_not_re_error(word: str) -> None:
    # found by fuzz/targets/words.py: "[z-a]" reached re.compile and raised re.error
    with pytest.raises(InvalidArgument, match="bad pattern"):
        expand(word, {"A": "hello"})
