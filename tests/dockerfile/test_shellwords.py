"""Dockerfile word processing: quotes, escapes, variable expansion, splitting (the
cases written for ``--change``; ``test_words`` has the builder's)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.dockerfile.words import expand, expand_words, split_raw
from lamina.errors import InvalidArgument

ENV = {"A": "apple", "E": "", "S": "one two", "P": "/usr/bin"}

WORDS: list[tuple[str, str]] = [
    ("plain", "plain"),
    ("$A", "apple"),
    ("${A}", "apple"),
    ("x${A}y", "xappley"),
    ("$A.txt", "apple.txt"),
    ("$UNSET", ""),
    ("a$UNSET-b", "a-b"),
    ("'$A'", "$A"),
    ('"$A"', "apple"),
    ('"a b"', "a b"),
    ("a\\ b", "a b"),
    ("\\$A", "$A"),
    ('"\\$A"', "$A"),
    ('"\\"q\\""', '"q"'),
    ('"a\\nb"', "a\\nb"),  # in double quotes, \ escapes only " $ and \
    ("'a\\nb'", "a\\nb"),
    ("a\\nb", "anb"),  # outside quotes \ escapes anything
    ("trailing\\", "trailing"),
    ("$", "$"),
    ("a$", "a$"),
    ("$-x", "x"),  # $- is a special parameter (unset here), as in BuildKit's lexer
    ("${A#a}", "pple"),  # pattern modifiers, as `docker import --change` has them
    ("${A:-d}", "apple"),
    ("${E:-d}", "d"),
    ("${E-d}", ""),
    ("${U-d}", "d"),
    ("${U:-$A}", "apple"),
    ("${A:+alt}", "alt"),
    ("${E:+alt}", ""),
    ("${E+alt}", "alt"),
    ("${U+alt}", ""),
    ("${A:?msg}", "apple"),
    ("${P}:/sbin", "/usr/bin:/sbin"),
    ("one two", "one two"),  # expand keeps whitespace
    ("$S", "one two"),
    ("''", ""),
    ("\"a\"'b'c", "abc"),
]


@pytest.mark.parametrize(("text", "want"), WORDS)
def test_expand(text: str, want: str) -> None:
    assert expand(text, ENV) == want


SPLITS: list[tuple[str, list[str]]] = [
    ("80 443", ["80", "443"]),
    ("  80\t443  ", ["80", "443"]),
    ("$S", ["one", "two"]),  # unquoted expansion splits
    ('"$S"', ["one two"]),  # quoted does not
    ("a'b c'd", ["ab cd"]),
    ("'' x", ["", "x"]),  # an empty quoted word is a word
    ("$UNSET x", ["x"]),  # an empty expansion is not
    ("${U:-8 9}", ["8", "9"]),
    ("a\\ b c", ["a b", "c"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "want"), SPLITS)
def test_expand_words(text: str, want: list[str]) -> None:
    assert expand_words(text, ENV) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("'open", "single quote"),
        ('"open', "double quote"),
        ("${A", "missing"),
        ("${}", "no variable name"),
        ("${A:=x}", "unsupported modifier"),
        ("${U:?must be set}", "U: must be set"),
        ("${E:?}", "E: is not set or empty"),
        ("${U?}", "U: is not set"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        expand(text, ENV)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('k=v k2="v 2"', ["k=v", 'k2="v 2"']),
        ("a='x y' b=z", ["a='x y'", "b=z"]),
        ('a="q\\" x" b', ['a="q\\" x"', "b"]),
        ("a\\ b c", ["a\\ b", "c"]),
        ("'it''s' x", ["'it''s'", "x"]),
        ("", []),
        ("  ", []),
        ('""', ['""']),
        ("end\\", ["end\\"]),  # a dangling escape stays, for the second pass to see
    ],
)
def test_split_raw(text: str, want: list[str]) -> None:
    assert [word for _, word in split_raw(text)] == want


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " ./-_=:", max_size=20))
def test_single_quoted_text_is_literal(text: str) -> None:
    assert expand("'" + text + "'", {"A": "x"}) == text
