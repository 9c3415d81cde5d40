"""Bounded expansion: one word, and what a stage's ARG/ENV/LABEL add to its config."""

from __future__ import annotations

import random
import subprocess
import time

import pytest

from lamina.dockerfile import parse
from lamina.dockerfile.config_changes import apply, apply_changes
from lamina.dockerfile.instructions import Arg, Location
from lamina.dockerfile.scope import MAX_STAGE_BYTES, StageScope, global_scope
from lamina.dockerfile.words import MAX_EXPANSION, expand, expand_at
from lamina.errors import LimitExceeded
from lamina.oci.canonical import MAX_DOCUMENT_BYTES
from lamina.oci.config import ImageConfig
from lamina.oci.platform import Platform


def test_stage_cap_is_the_config_cap() -> None:
    assert MAX_STAGE_BYTES == MAX_DOCUMENT_BYTES
    assert MAX_EXPANSION < MAX_STAGE_BYTES


def test_one_word_over_the_cap_names_its_line() -> None:
    half = "x" * (MAX_EXPANSION // 2 + 1)
    with pytest.raises(LimitExceeded, match=r"^Containerfile:7:1: variable substitution") as e:
        expand_at(Location("Containerfile", 7, 1), "$a$a", {"a": half})
    assert e.value.hint and "4 MiB" in e.value.hint
    assert e.value.exit_code == 6


def _stage(source: str) -> list[object]:
    """Apply a stage's ARG/ENV/LABEL lines as the builder does; returns the history."""
    df = parse(source, "Containerfile")
    scope = StageScope({}, global_scope(df, {}))
    image = ImageConfig.new(Platform.host())
    history: list[object] = []
    for node in df.stages[0].instructions:
        if isinstance(node, Arg):
            scope.apply(node)
        else:
            image, created_by = apply(node, image, scope)
            history.append(created_by)
    return history


def _doubling(keyword: str, lines: int) -> str:
    return f"FROM scratch\n{keyword} a=x\n" + f"{keyword} a=$a$a\n" * lines


@pytest.mark.parametrize("keyword", ["ENV", "ARG"])
def test_doubling_chain_stops_at_the_line_that_crosses(keyword: str) -> None:
    # a=x doubled 20 times is 1 MiB: the word cap or the stage cap stops the next lines
    with pytest.raises(LimitExceeded, match=r"^Containerfile:2[23]:1: "):
        _stage(_doubling(keyword, 40))


@pytest.mark.parametrize(
    "tail",
    [
        # many 512 KiB values under new names: each word is fine, the stage is not
        "".join(f"ENV b{i}=$a\n" for i in range(100)),
        "".join(f"LABEL b{i}=$a\n" for i in range(100)),
        "".join(f"ARG b{i}=$a\n" for i in range(100)),
        # the same name again and again: the env stays small, the history does not
        "ENV a=$a\n" * 100,
    ],
)
def test_total_is_bounded(tail: str) -> None:
    # lines 1-21 make a 512 KiB $a (and count 1 MiB); the tail's lines add 0.5-1 MiB
    source = "FROM scratch\nARG a=x\n" + "ARG a=$a$a\n" * 19 + tail
    with pytest.raises(LimitExceeded, match=r"^Containerfile:(\d+):1: the stage's") as e:
        _stage(source)
    line = int(e.value.message.split(":")[1])
    assert 21 < line <= 21 + 7  # stopped early, by the line that crossed 4 MiB


def test_global_args_are_bounded_too() -> None:
    source = "ARG a=x\n" + "ARG a=$a$a\n" * 19 + "".join(f"ARG b{i}=$a\n" for i in range(50))
    with pytest.raises(LimitExceeded, match=r"^Dockerfile:\d+:1: "):
        global_scope(parse(source + "FROM scratch\n"), {})


def test_real_sizes_still_build() -> None:
    # 64 KiB values, a few of them: far from the cap
    big = "y" * (64 << 10)
    history = _stage(f"FROM scratch\nENV a={big}\nLABEL l=$a\nARG b=$a\nENV c=$a$a\n")
    assert len(history) == 3


def test_changes_are_bounded() -> None:
    config = ImageConfig.new(Platform.host())
    half = "x" * (MAX_EXPANSION // 2)
    config = config.with_config(config.config.with_env("a", half))
    with pytest.raises(LimitExceeded, match=r"^--change:\d+:1: "):
        apply_changes(config, [f"LABEL b{i}=$a" for i in range(20)])


# ---------------------------------------------------------------- pattern modifiers

HOSTILE_WORDS = ["${a#*b}", "${a##*b}", "${a%%b*}", "${a/*b/x}", "${a//a*a*a*a*b/x}", "${a//a/}"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("word", HOSTILE_WORDS)
def test_pattern_modifiers_are_linear(word: str) -> None:
    """A fullmatch per prefix, or a backtracking regex, takes hours on a value of the
    largest size a word may reach; the automaton takes well under a second."""
    value = "a" * MAX_EXPANSION
    started = time.monotonic()
    out = expand(word, {"a": value})
    assert time.monotonic() - started < 5.0
    assert out == ("" if word == "${a//a/}" else value)


def test_pattern_modifiers_match_bash_on_random_words() -> None:
    rng = random.Random(11)
    cases = []
    for _ in range(150):
        value = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 6)))
        pattern = "".join(rng.choice("ab.*?") for _ in range(rng.randint(1, 4)))
        op = rng.choice(["#", "##", "%", "%%", "/", "//"])
        cases.append((value, "${v" + op + pattern + ("/R" if "/" in op else "") + "}"))
    script = "".join(f"v='{v}'; printf '%s\\0' \"{w}\"\n" for v, w in cases)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    want = out.stdout.split("\0")[:-1]
    assert [expand(w, {"v": v}) for v, w in cases] == want
