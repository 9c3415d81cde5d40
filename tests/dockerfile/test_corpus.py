"""Whole Dockerfiles as people write them, the parser/words hand-off the executor
relies on, and a fuzz test: any text either parses or raises ParseError."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.dockerfile import ParseError, expand, expand_pairs, parse
from lamina.dockerfile.instructions import (
    Arg,
    Copy,
    Env,
    ExecForm,
    Heredoc,
    Location,
    Mount,
    OnBuild,
    Run,
    ShellForm,
    heredoc_source,
)
from lamina.dockerfile.lexer import lex

GO_APP = """\
# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.22
ARG ALPINE=3.19

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=bind,source=go.sum,target=go.sum \\
    --mount=type=bind,source=go.mod,target=go.mod \\
    go mod download -x
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=bind,target=. \\
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /bin/server ./cmd/server

FROM alpine:${ALPINE} AS final
RUN --mount=type=cache,target=/var/cache/apk \\
    apk --update add ca-certificates tzdata && update-ca-certificates
ARG UID=10001
RUN adduser --disabled-password --gecos "" --home "/nonexistent" \\
    --shell "/sbin/nologin" --no-create-home --uid "${UID}" appuser
USER appuser
COPY --from=build /bin/server /bin/
EXPOSE 8000
ENTRYPOINT [ "/bin/server" ]
"""


def test_go_multi_stage() -> None:
    df = parse(GO_APP, "Dockerfile")
    assert df.syntax == "docker/dockerfile:1.7"
    assert [a.args[0].name for a in df.global_args] == ["GO_VERSION", "ALPINE"]
    build, final = df.stages
    assert build.name == "build" and final.name == "final"
    assert build.base.platform == "$BUILDPLATFORM"
    first_run = build.instructions[2]
    assert isinstance(first_run, Run)
    assert first_run.location == Location("Dockerfile", 8, 1)
    assert first_run.command == ShellForm("go mod download -x")
    assert first_run.mounts == (
        Mount("cache", (("target", "/go/pkg/mod"),)),
        Mount("bind", (("source", "go.sum"), ("target", "go.sum"))),
        Mount("bind", (("source", "go.mod"), ("target", "go.mod"))),
    )
    copy = final.instructions[-3]
    assert copy == Copy(Location("Dockerfile", 23, 1), ("/bin/server",), "/bin/", from_="build")
    assert final.instructions[-1].location.line == 25
    entry = final.instructions[-1]
    assert getattr(entry, "command", None) == ExecForm(("/bin/server",))
    # global ARGs expand in FROM with the build's values
    env = {"ALPINE": "3.20"}
    assert expand(final.base.image, env) == "alpine:3.20"


def test_env_chain_with_parsed_nodes() -> None:
    df = parse("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    env: dict[str, str] = {}
    for node in df.stages[0].instructions:
        assert isinstance(node, Env)
        env.update(expand_pairs(node.pairs, env))
    assert env == {"abc": "bye", "def": "hello", "ghi": "bye"}


def test_arg_defaults_expand_against_earlier_args() -> None:
    df = parse('ARG A=1\nARG B=${A}2 C="x y"\nFROM scratch\n')
    env: dict[str, str] = {}
    for arg in df.global_args:
        assert isinstance(arg, Arg)
        for decl in arg.args:
            env[decl.name] = expand(decl.default or "", env)
    assert env == {"A": "1", "B": "12", "C": "x y"}


def test_backtick_escape_in_words() -> None:
    df = parse('# escape=`\nFROM scratch\nENV p="C:`"x`"" q=a`$b\n')
    (node,) = df.stages[0].instructions
    assert isinstance(node, Env)
    assert expand_pairs(node.pairs, {"b": "B"}, escape=df.escape) == [
        ("p", 'C:"x"'),
        ("q", "a$b"),
    ]


def test_heredoc_source_lookup() -> None:
    df = parse('FROM scratch\nCOPY <<-"A" <<B /dst/\n\tone\n\tA\ntwo\nB\n')
    (node,) = df.stages[0].instructions
    assert isinstance(node, Copy)
    found = [heredoc_source(s, node.heredocs) for s in node.sources]
    assert found == [Heredoc("A", "one\n", False, True), Heredoc("B", "two\n", True, False)]
    assert heredoc_source("plain.txt", node.heredocs) is None
    assert heredoc_source("<<C", node.heredocs) is None


def test_quoted_heredoc_marker_is_not_a_heredoc() -> None:
    df = parse("FROM scratch\nRUN echo '<<EOF' \"<<X\"\nUSER u\n")
    run, user = df.stages[0].instructions
    assert isinstance(run, Run) and run.heredocs == ()
    assert user.location.line == 3


def test_mount_csv_quoting() -> None:
    df = parse('FROM scratch\nRUN --mount=type=secret,id=x,"target=/run/a,b" cat\n')
    (node,) = df.stages[0].instructions
    assert isinstance(node, Run)
    assert node.mounts == (Mount("secret", (("id", "x"), ("target", "/run/a,b"))),)
    assert node.mounts[0].get("target") == "/run/a,b"
    assert node.mounts[0].get("uid", "0") == "0"


_ALPHABET = string.ascii_letters[:8] + " \t\n\\`'\"$={}[]#<>-,:" + "FROMRUNCOPY"
_PIECES = st.sampled_from(
    [
        "FROM ",
        "scratch",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "SHELL ",
        "<<EOF",
        "<<-'E'",
        "EOF",
        "\n",
        "\\\n",
        "# escape=`\n",
        "--mount=",
        "type=cache,",
        "--from=",
        '["a", "b"]',
        "a=b ",
        '"',
        "'",
        "CMD",
        "NONE",
        " AS x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(_ALPHABET, max_size=6)), max_size=25))
def test_fuzz_parse_or_parse_error(pieces: list[str]) -> None:
    source = "".join(pieces)
    try:
        df = parse(source, "f")
    except ParseError as exc:
        loc = exc.location
        assert str(exc).startswith(f"f:{loc.line}:{loc.column}: ")
        assert 1 <= loc.line <= max(1, source.count("\n") + 1)
        assert loc.column >= 1
    else:
        assert df.stages


def test_heredoc_rules_follow_buildkit() -> None:
    # ONBUILD triggers take heredocs too
    df = parse("FROM scratch\nONBUILD RUN <<EOF\necho x\nEOF\nUSER u\n")
    onbuild, user = df.stages[0].instructions
    assert isinstance(onbuild, OnBuild) and isinstance(onbuild.instruction, Run)
    assert onbuild.instruction.heredocs == (Heredoc("EOF", "echo x\n", True, False),)
    assert user.location.line == 5
    # a JSON form takes none: "<<EOF" is a plain argument
    df = parse('FROM scratch\nRUN --network=none ["cat", "<<EOF"]\nUSER u\n')
    run, _ = df.stages[0].instructions
    assert isinstance(run, Run) and run.heredocs == ()
    assert run.command == ExecForm(("cat", "<<EOF"))
    # a quote anywhere in the delimiter disables expansion; the name is unquoted
    df = parse('FROM scratch\nRUN <<E"O"F cat\n$x\nEOF\n')
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run)
    assert run.heredocs == (Heredoc("EOF", "$x\n", False, False),)
    # names are any word without "<"
    df = parse("FROM scratch\nRUN cat <<END-1.x\nbody\nEND-1.x\n")
    (run,) = df.stages[0].instructions
    assert isinstance(run, Run) and run.heredocs[0].name == "END-1.x"


def test_escaped_escape_does_not_continue() -> None:
    df = parse("FROM scratch\nRUN echo a\\\\\nUSER u\nRUN echo b \\ \t\n  c\n")
    run, user, run2 = df.stages[0].instructions
    assert run == Run(Location("Dockerfile", 2, 1), ShellForm("echo a\\\\"))
    assert user.location.line == 3
    assert run2 == Run(Location("Dockerfile", 4, 1), ShellForm("echo b   c"))


_LINE_PIECES = st.sampled_from(["RUN a", "  b", "\tc ", "# c", "", "d \\", "e\\", "  \\", "x'y"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE_PIECES, min_size=1, max_size=12))
def test_every_character_maps_back_to_its_source_position(lines: list[str]) -> None:
    source = "\n".join(lines) + "\n"
    physical = source.split("\n")
    for logical in lex(source, "f").lines:
        for offset, ch in enumerate(logical.text):
            loc = logical.location(offset)
            assert physical[loc.line - 1][loc.column - 1] == ch, (logical.text, offset)


def test_original_text_for_progress_and_history() -> None:
    df = parse(GO_APP)
    build, final = df.stages
    assert (
        df.original(build.base)
        == "FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build"
    )
    assert df.original(build.instructions[2]) == (
        "RUN --mount=type=cache,target=/go/pkg/mod "
        "    --mount=type=bind,source=go.sum,target=go.sum "
        "    --mount=type=bind,source=go.mod,target=go.mod "
        "    go mod download -x"
    )
    assert df.original(final.instructions[-1]) == 'ENTRYPOINT [ "/bin/server" ]'
    assert df.original(df.global_args[1]) == "ARG ALPINE=3.19"
    other = parse("FROM scratch\nUSER nobody\n", "other/Dockerfile")
    assert df.original(other.stages[0].instructions[0]) == ""
