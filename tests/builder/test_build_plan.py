"""The stage graph: which stages a target needs, in which order, and the errors."""

from __future__ import annotations

import pytest

from lamina.builder.plan import Source, plan
from lamina.dockerfile import ParseError, parse
from lamina.errors import InvalidArgument

MULTI = """\
ARG BASE=busybox
FROM $BASE AS deps
RUN make deps
FROM deps AS build
COPY --from=assets /a /a
RUN make
FROM busybox AS assets
RUN make assets
FROM busybox AS test
COPY --from=build /out /out
FROM scratch AS final
COPY --from=build /out /app
"""


def order(text: str, target: str | None = None, **build_args: str) -> list[str]:
    p = plan(parse(text), build_args, target)
    return [s.label for s in p.stages]


def test_target_pulls_only_what_it_needs_dependencies_first() -> None:
    assert order(MULTI) == ["deps", "assets", "build", "final"]
    assert order(MULTI, "assets") == ["assets"]
    assert order(MULTI, "test") == ["deps", "assets", "build", "test"]
    assert order(MULTI, "DEPS") == ["deps"]  # stage names are case-insensitive


def test_bases_are_stages_images_or_scratch() -> None:
    p = plan(parse(MULTI), {"BASE": "docker.io/library/alpine:3"})
    bases = {s.label: s.base for s in p.stages}
    assert bases["deps"] == Source(image="docker.io/library/alpine:3")  # global ARG expanded
    assert bases["build"] == Source(stage=0)
    assert bases["final"].scratch
    assert p.stage(1).needs == (0, 2)  # FROM deps, COPY --from=assets (a forward reference)


def test_from_names_only_earlier_stages() -> None:
    # "FROM later" before a stage called "later" exists is an image name, as in BuildKit.
    p = plan(parse("FROM later\nFROM busybox AS later\n"), target="0")
    assert p.stages[0].base == Source(image="later")


def test_index_references_and_unnamed_labels() -> None:
    text = "FROM busybox\nRUN a\nFROM scratch\nCOPY --from=0 /x /x\n"
    p = plan(parse(text))
    assert [s.label for s in p.stages] == ["stage-0", "stage-1"]
    with pytest.raises(ParseError, match=r"Dockerfile:2:1: COPY --from=5: there is no stage 5"):
        plan(parse("FROM scratch\nCOPY --from=5 /x /x\n"))


def test_cycle_is_an_error_at_the_instruction() -> None:
    text = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n"
    with pytest.raises(ParseError, match=r"Dockerfile:(2|4):1: circular dependency detected"):
        plan(parse(text))
    with pytest.raises(ParseError, match="circular dependency detected on stage: a"):
        plan(parse("FROM busybox AS a\nCOPY --from=a /x /y\n"))


def test_run_mount_from_is_an_edge() -> None:
    text = "FROM busybox AS tools\nFROM busybox\nRUN --mount=type=bind,from=tools,target=/t ls /t\n"
    assert order(text) == ["tools", "stage-1"]


def test_unknown_from_is_reported_at_its_line_when_no_image_has_the_name() -> None:
    text = "FROM busybox AS builder\nFROM scratch\nCOPY --from=biulder /out /out\n"
    with pytest.raises(ParseError, match=r"Dockerfile:3:1: --from=biulder: no stage of that name"):
        plan(parse(text), image_exists=lambda name: False)
    p = plan(parse(text), image_exists=lambda name: name == "biulder")
    assert p.stages[-1].images == ("biulder",)


def test_unknown_target() -> None:
    with pytest.raises(InvalidArgument, match="target stage 'nope' could not be found"):
        plan(parse(MULTI), target="nope")


def test_unused_build_args_are_reported() -> None:
    p = plan(parse(MULTI), {"BASE": "x", "NOPE": "1", "HTTP_PROXY": "p"})
    assert p.unused_args == ("NOPE",)


def test_from_that_expands_to_nothing() -> None:
    with pytest.raises(ParseError, match=r"Dockerfile:2:1: FROM \$\{IMG\}"):
        plan(parse("ARG IMG\nFROM ${IMG}\n"))
