"""The builder and ``--change`` share one language: the same text gives the same config
either way. Each case here pins a point where the two old implementations
(``builder/metadata.py`` and ``oci/changes.py``) disagreed, settled as BuildKit's
``dockerfile2llb`` dispatchers (or moby's ``BuildFromConfig`` for ``--change``) do it."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.dockerfile import (
    MAX_EXPANSION,
    ParseError,
    StageScope,
    apply,
    apply_change,
    apply_changes,
    parse,
    parse_changes,
)
from lamina.dockerfile.instructions import Cmd, Env
from lamina.errors import InvalidArgument, InvalidFormat, LimitExceeded
from lamina.oci.config import ContainerConfig, ImageConfig
from lamina.oci.platform import Platform


def cfg(os: str = "linux", **container: Any) -> ImageConfig:
    return ImageConfig.new(Platform(os, "amd64")).with_config(ContainerConfig(**container))


BASE = cfg(env=("S=a b", "PATH=/bin"), working_dir="/srv", cmd=("inherited",))


def built(lines: str, base: ImageConfig = BASE) -> ImageConfig:
    """What the builder's stage makes of ``lines`` on ``base`` (metadata only)."""
    df = parse("FROM scratch\n" + lines)
    scope = StageScope({}, {}, env=base.config.env_dict(), escape=df.escape)
    image, cmd_set = base, False
    for node in df.stages[0].instructions:
        image, _ = apply(node, image, scope, escape=df.escape, cmd_set=cmd_set)
        cmd_set = cmd_set or isinstance(node, Cmd)
    return image


def both(lines: str, base: ImageConfig = BASE) -> ContainerConfig:
    """The config from the builder and from ``--change``; they must be the same."""
    ours = built(lines, base).config
    assert apply_change(base, lines).config == ours
    return ours


def test_entrypoint_keeps_a_cmd_of_the_same_stage_only() -> None:
    # BuildKit dispatchEntrypoint: if !d.cmdSet { Cmd = nil }
    assert both('ENTRYPOINT ["/e"]').cmd is None
    assert both('CMD ["c"]\nENTRYPOINT ["/e"]').cmd == ("c",)
    assert both('ENTRYPOINT ["/e"]\nCMD ["c"]').cmd == ("c",)


def test_workdir_absolute_is_kept_as_written_relative_is_cleaned() -> None:
    # system.NormalizeWorkdir: the builder used to clean "/a//b/" to "/a/b".
    assert both("WORKDIR /a//b/").working_dir == "/a//b/"
    assert both("WORKDIR x//y/../z").working_dir == "/srv/x/z"


def test_workdir_that_expands_to_nothing_keeps_the_current_one() -> None:
    # --change used to refuse it ("WORKDIR requires a path").
    assert both("WORKDIR $UNSET").working_dir == "/srv"


def test_user_that_expands_to_nothing_is_empty() -> None:
    # --change used to refuse it; BuildKit's dispatchUser sets it as is.
    assert both("USER $UNSET").user == ""


def test_expose_that_expands_to_nothing_exposes_nothing() -> None:
    # --change used to refuse it; BuildKit's dispatchExpose parses an empty list.
    assert both("EXPOSE $UNSET").exposed_ports == ()
    assert both("EXPOSE $UNSET 80").exposed_ports == ("80/tcp",)


def test_volume_and_user_words_are_not_split() -> None:
    # VOLUME is a single-word expansion in BuildKit; --change used to split "$S".
    assert both("VOLUME $S").volumes == ("a b",)
    assert both("VOLUME /x $S").volumes == ("/x", "a b")
    assert both("USER $S").user == "a b"


def test_stopsignal_is_checked_in_a_build_too() -> None:
    # BuildKit's dispatchStopSignal calls signal.ParseSignal; the builder took anything.
    assert both("STOPSIGNAL SIGRTMIN+3").stop_signal == "SIGRTMIN+3"
    with pytest.raises(ParseError, match="invalid signal 'SIGNOPE'") as info:
        built("STOPSIGNAL SIGNOPE")
    assert info.value.location.line == 2
    with pytest.raises(ParseError, match="invalid signal"):
        apply_change(BASE, "STOPSIGNAL SIGNOPE")


def test_windows_images_default_to_cmd_in_a_build_too() -> None:
    win = cfg("windows")
    assert both("CMD dir", win).cmd == ("cmd", "/S", "/C", "dir")
    shell = cfg(shell=("/bin/bash", "-c"))
    assert both("ENTRYPOINT run", shell).entrypoint == ("/bin/bash", "-c", "run")


def test_healthcheck_durations_are_go_durations_with_a_1ms_floor() -> None:
    # The builder refused "0" and ".5s" (Go's ParseDuration takes them) and let 10us and
    # --retries=-1 through; --change refused those two. Now both, at parse time.
    check = both("HEALTHCHECK --interval=0 --timeout=.5s CMD true").healthcheck
    assert check is not None and (check.interval, check.timeout) == (0, 500_000_000)
    for bad, message in [
        ("--interval=10us", "cannot be less than 1ms"),
        ("--retries=-1", "cannot be negative"),
        ("--timeout=5", "is not a duration"),
    ]:
        with pytest.raises(ParseError, match=message):
            parse(f"FROM scratch\nHEALTHCHECK {bad} CMD true\n")
        with pytest.raises(ParseError, match=message):
            apply_change(BASE, f"HEALTHCHECK {bad} CMD true")


def test_legacy_env_name_ends_at_the_first_whitespace() -> None:
    # BuildKit parseNameVal: reWhitespace.Split(rest, 2), quotes or not.
    (node,) = parse_changes(['ENV "A B" c']).instructions
    assert isinstance(node, Env) and node.pairs == (('"A', 'B" c'),)
    assert both("ENV K some value").env_dict()["K"] == "some value"


def test_names_that_expand_to_nothing_are_refused_in_a_build_too() -> None:
    for lines in ("ENV $UNSET=1", "LABEL ${UNSET}=x"):
        with pytest.raises(ParseError, match="names can not be blank"):
            built(lines)
        with pytest.raises(ParseError, match="names can not be blank"):
            apply_change(BASE, lines)


def test_change_strings_are_joined_by_newlines_as_moby_does() -> None:
    # BuildFromConfig parses strings.Join(changes, "\n"): a continuation runs on into the
    # next string, and a directive at the top applies to all.
    out = apply_changes(BASE, ["ENV A=1 \\", "B=2"]).config.env_dict()
    assert (out["A"], out["B"]) == ("1", "2")
    out = apply_changes(BASE, ["# escape=`", "ENV C=x`$S"]).config.env_dict()
    assert out["C"] == "x$S"


def test_build_instructions_are_refused_before_they_are_parsed() -> None:
    for text in ("RUN", "RUN echo hi", "COPY a", "FROM", "ARG X", "SHELL []", "FROB x"):
        keyword = text.split()[0]
        with pytest.raises(ParseError, match=f"{keyword} is not a valid change command") as info:
            apply_change(BASE, text)
        assert info.value.hint is not None and "ENTRYPOINT" in info.value.hint
    # errors name the line of the joined changes, and are still InvalidArgument (exit 4)
    with pytest.raises(ParseError) as caught:
        apply_changes(BASE, ["USER a", "RUN x"])
    assert str(caught.value).startswith("--change:2:1: RUN is not a valid change command")
    assert isinstance(caught.value, InvalidFormat) and isinstance(caught.value, InvalidArgument)


def test_change_instructions_are_parsed_as_in_a_dockerfile() -> None:
    # --change used to take "CMD --help" as a shell command and any ONBUILD trigger; the
    # parser rejects flags on instructions without any, and unknown triggers.
    with pytest.raises(ParseError, match="unknown flag: --help for CMD"):
        apply_change(BASE, "CMD --help")
    with pytest.raises(ParseError, match="unknown instruction: BLAH"):
        apply_change(BASE, "ONBUILD BLAH x")
    assert both("ONBUILD copy . /src").on_build == ("copy . /src",)


def test_expansion_is_bounded() -> None:
    # Each ENV doubles A: 2**24 characters after 24 lines, unless something stops it.
    doubling = ["ENV A=xxxxxxxx"] + ["ENV A=$A$A"] * 24
    with pytest.raises(LimitExceeded, match=str(MAX_EXPANSION)):
        apply_changes(BASE, doubling)
    with pytest.raises(LimitExceeded):
        built("\n".join(doubling))
    squared = cfg(env=(f"A={'y' * 4096}",))
    with pytest.raises(LimitExceeded):
        apply_change(squared, "ENV B=${A//?/$A}")
    # below the bound nothing changes
    assert len(apply_changes(BASE, doubling[:10]).config.env_dict()["A"]) == 8 * 2**9
