"""apply_change / apply_changes: what `docker import --change` does to a config."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.dockerfile.config_changes import apply_change, apply_changes
from lamina.dockerfile.durations import parse_duration
from lamina.dockerfile.instructions import Cmd, Env, Expose, ShellForm, User
from lamina.dockerfile.parser import parse_changes
from lamina.errors import InvalidArgument
from lamina.oci.config import ContainerConfig, Healthcheck, ImageConfig
from lamina.oci.platform import Platform

S = 1_000_000_000


def cfg(**container: Any) -> ImageConfig:
    return ImageConfig.new(Platform("linux", "amd64")).with_config(ContainerConfig(**container))


BASE = cfg(env=("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443"), working_dir="/srv")

# (instruction, field of ContainerConfig, expected value) applied to BASE
CASES: list[tuple[str, str, Any]] = [
    ('CMD ["sh", "-c", "echo hi"]', "cmd", ("sh", "-c", "echo hi")),
    ("CMD []", "cmd", ()),
    ("CMD echo $NAME", "cmd", ("/bin/sh", "-c", "echo $NAME")),  # no expansion in CMD
    ('CMD ["not", json', "cmd", ("/bin/sh", "-c", '["not", json')),  # bad JSON: shell form
    ("CMD [1, 2]", "cmd", ("/bin/sh", "-c", "[1, 2]")),  # not strings: shell form
    ("cmd   lower case", "cmd", ("/bin/sh", "-c", "lower case")),
    ('ENTRYPOINT ["/init"]', "entrypoint", ("/init",)),
    ("ENTRYPOINT exec app", "entrypoint", ("/bin/sh", "-c", "exec app")),
    ("ENTRYPOINT []", "entrypoint", ()),
    ("ENV A=1", "env", ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=1")),
    ('ENV NAME="big world"', "env", ("PATH=/usr/bin:/bin", "NAME=big world", "PORTS=80 443")),
    (
        'ENV k=v k2="v 2"',
        "env",
        ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "k=v", "k2=v 2"),
    ),
    ("ENV PATH=$PATH:/sbin", "env", ("PATH=/usr/bin:/bin:/sbin", "NAME=world", "PORTS=80 443")),
    ("ENV PATH=${PATH}:/x", "env", ("PATH=/usr/bin:/bin:/x", "NAME=world", "PORTS=80 443")),
    ("ENV A='$NAME'", "env", ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=$NAME")),
    ("ENV A=\\$NAME", "env", ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=$NAME")),
    ("ENV A=", "env", ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=")),
    (
        "ENV A hello  big world",
        "env",
        ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=hello  big world"),
    ),
    ("ENV A $NAME", "env", ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=world")),
    (
        'ENV A "quoted legacy"',
        "env",
        ("PATH=/usr/bin:/bin", "NAME=world", "PORTS=80 443", "A=quoted legacy"),
    ),
    (
        "ENV NAME=new B=$NAME",  # pairs expand against the old Env
        "env",
        ("PATH=/usr/bin:/bin", "NAME=new", "PORTS=80 443", "B=world"),
    ),
    ("LABEL a=b", "labels", {"a": "b"}),
    (
        'LABEL "com.example.vendor"="ACME Inc" version=1.0',
        "labels",
        {"com.example.vendor": "ACME Inc", "version": "1.0"},
    ),
    ("LABEL desc='multi word' n=$NAME", "labels", {"desc": "multi word", "n": "world"}),
    ("LABEL maintainer someone <a@b.c>", "labels", {"maintainer": "someone <a@b.c>"}),
    ("EXPOSE 80", "exposed_ports", ("80/tcp",)),
    ("EXPOSE 80/tcp 53/udp 9/sctp", "exposed_ports", ("53/udp", "80/tcp", "9/sctp")),
    ("EXPOSE 80/TCP", "exposed_ports", ("80/tcp",)),
    ("EXPOSE 8000-8002", "exposed_ports", ("8000/tcp", "8001/tcp", "8002/tcp")),
    ("EXPOSE $PORTS", "exposed_ports", ("443/tcp", "80/tcp")),
    ("EXPOSE 8080:80", "exposed_ports", ("80/tcp",)),
    ("EXPOSE 80 80/tcp", "exposed_ports", ("80/tcp",)),
    ("USER nobody", "user", "nobody"),
    ("USER 1000:1000", "user", "1000:1000"),
    ("USER $NAME", "user", "world"),
    ("VOLUME /data", "volumes", ("/data",)),
    ("VOLUME /a /b", "volumes", ("/a", "/b")),
    ('VOLUME ["/c", "/d e"]', "volumes", ("/c", "/d e")),
    ("VOLUME /$NAME", "volumes", ("/world",)),
    ("WORKDIR /app", "working_dir", "/app"),
    ("WORKDIR sub/dir", "working_dir", "/srv/sub/dir"),
    ("WORKDIR ../up", "working_dir", "/up"),
    ("WORKDIR /$NAME", "working_dir", "/world"),
    ("WORKDIR /a//b/", "working_dir", "/a//b/"),  # absolute paths are kept as given
    ("STOPSIGNAL SIGKILL", "stop_signal", "SIGKILL"),
    ("STOPSIGNAL term", "stop_signal", "term"),
    ("STOPSIGNAL 9", "stop_signal", "9"),
    ("STOPSIGNAL SIGRTMIN+3", "stop_signal", "SIGRTMIN+3"),
    ("ONBUILD RUN make", "on_build", ("RUN make",)),
    ("ONBUILD copy . /src", "on_build", ("copy . /src",)),
    ("HEALTHCHECK NONE", "healthcheck", Healthcheck(("NONE",))),
    (
        "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f http://x/",
        "healthcheck",
        Healthcheck(("CMD-SHELL", "curl -f http://x/"), 30 * S, 90 * S, S // 2, 0, 3),
    ),
    (
        'HEALTHCHECK --start-interval=2s CMD ["/check", "-v"]',
        "healthcheck",
        Healthcheck(("CMD", "/check", "-v"), 0, 0, 0, 2 * S, 0),
    ),
]


@pytest.mark.parametrize(("instruction", "attr", "want"), CASES, ids=[c[0][:50] for c in CASES])
def test_change(instruction: str, attr: str, want: Any) -> None:
    out = apply_change(BASE, instruction)
    got = getattr(out.config, attr)
    assert (dict(got) if attr == "labels" else got) == want
    # nothing else moved (apart from CMD, which ENTRYPOINT clears)
    for other in ("user", "working_dir", "stop_signal", "volumes"):
        if other != attr:
            assert getattr(out.config, other) == getattr(BASE.config, other)
    # the result survives serialisation
    assert ImageConfig.parse(out.to_bytes()) == out


INVALID: list[tuple[str, str]] = [
    ("RUN echo hi", "RUN is not a valid change command"),
    ("FROM scratch", "not a valid change command"),
    ("COPY a b", "not a valid change command"),
    ("CMD", "CMD requires at least one argument"),
    ("ENTRYPOINT", "requires at least one argument"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV A=1 B", "can't find = in 'B'"),
    ("ENV =1", "ENV names can not be blank"),
    ("ENV A='open", "single quote"),
    ("LABEL", "LABEL requires at least one argument"),
    ("LABEL a=1 b", "can't find ="),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("EXPOSE http", "invalid port"),
    ("EXPOSE 80/icmp", "invalid protocol"),
    ("EXPOSE 70000", "65535"),
    ("EXPOSE 90-80", "range"),
    ("EXPOSE 80-", "invalid port"),
    ("EXPOSE /tcp", "no port"),
    ("USER", "USER requires exactly one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),  # BuildKit's words
    ('VOLUME ["/a", ""]', "can not be an empty string"),
    ("WORKDIR", "WORKDIR requires a path"),
    ("STOPSIGNAL SIGNOPE", "invalid signal"),
    ("STOPSIGNAL 0", "1 to 64"),
    ("STOPSIGNAL 65", "1 to 64"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),  # BuildKit's words
    ("ONBUILD", "ONBUILD requires an instruction"),
    ("ONBUILD ONBUILD RUN x", "chaining ONBUILD"),
    ("ONBUILD FROM busybox", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD maintainer me", "MAINTAINER isn't allowed"),
    ("HEALTHCHECK NONE now", "takes no arguments"),
    ("HEALTHCHECK --interval=1x CMD true", "invalid duration"),
    ("HEALTHCHECK --interval=10us CMD true", "less than 1ms"),
    ("HEALTHCHECK --retries=-1 CMD true", "cannot be negative"),
    ("HEALTHCHECK --retries=x CMD true", "not a number"),
    ("HEALTHCHECK --bogus=1 CMD true", "unknown flag"),
    ("HEALTHCHECK --interval CMD true", "requires a value"),  # the parser's flag words
    ("HEALTHCHECK RUN true", "unknown type"),
    ("HEALTHCHECK CMD", "requires a command"),
]


@pytest.mark.parametrize(("instruction", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid(instruction: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        apply_change(BASE, instruction)


def test_invalid_change_has_hint() -> None:
    with pytest.raises(InvalidArgument) as info:
        apply_change(BASE, "RUN x")
    assert info.value.hint is not None and "CMD" in info.value.hint


def test_entrypoint_clears_cmd_unless_cmd_came_first() -> None:
    start = cfg(cmd=("old",))
    assert apply_change(start, 'ENTRYPOINT ["/e"]').config.cmd is None
    both = apply_changes(start, ['CMD ["c"]', 'ENTRYPOINT ["/e"]'])
    assert both.config.cmd == ("c",) and both.config.entrypoint == ("/e",)
    # separate calls are separate batches
    assert apply_change(apply_change(start, 'CMD ["c"]'), 'ENTRYPOINT ["/e"]').config.cmd is None
    after = apply_changes(start, ['ENTRYPOINT ["/e"]', 'CMD ["c"]'])
    assert after.config.cmd == ("c",)


def test_shell_form_uses_the_image_shell() -> None:
    c = cfg(shell=("/bin/bash", "-o", "pipefail", "-c"))
    assert apply_change(c, "CMD ls | wc").config.cmd == (
        "/bin/bash",
        "-o",
        "pipefail",
        "-c",
        "ls | wc",
    )
    win = ImageConfig.new(Platform("windows", "amd64"))
    assert apply_change(win, "CMD dir").config.cmd == ("cmd", "/S", "/C", "dir")


def test_env_later_instructions_see_earlier_ones() -> None:
    out = apply_changes(BASE, ["ENV A=1", "ENV B=$A-x", "LABEL l=$B"])
    assert out.config.env_dict()["B"] == "1-x"
    assert dict(out.config.labels) == {"l": "1-x"}


def test_labels_and_ports_accumulate() -> None:
    out = apply_changes(
        cfg(labels={"keep": "1"}), ["LABEL a=1", "LABEL a=2 b=3", "EXPOSE 80", "EXPOSE 81"]
    )
    assert dict(out.config.labels) == {"keep": "1", "a": "2", "b": "3"}
    assert out.config.exposed_ports == ("80/tcp", "81/tcp")


def test_workdir_relative_to_previous() -> None:
    out = apply_changes(cfg(), ["WORKDIR a", "WORKDIR b", "WORKDIR ../c"])
    assert out.config.working_dir == "/a/c"


def test_multiline_change() -> None:
    out = apply_change(BASE, "# a comment\nENV A=1 \\\n    B=2\n\nUSER x")
    assert out.config.env_dict()["A"] == "1" and out.config.env_dict()["B"] == "2"
    assert out.config.user == "x"


def _instructions(text: str) -> list[tuple[str, object]]:
    """(keyword, its argument) of each instruction parse_changes finds."""
    out: list[tuple[str, object]] = []
    for node in parse_changes([text]).instructions:
        if isinstance(node, Cmd):
            assert isinstance(node.command, ShellForm)
            out.append(("CMD", node.command.script))
        elif isinstance(node, User):
            out.append(("USER", node.user))
        elif isinstance(node, Env):
            out.append(("ENV", node.pairs))
        elif isinstance(node, Expose):
            out.append(("EXPOSE", node.ports))
    return out


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("CMD x", [("CMD", "x")]),
        ("  cmd\tx  y ", [("CMD", "x  y")]),
        ("USER a\nUSER b", [("USER", "a"), ("USER", "b")]),
        ("ENV A=1 \\\n B=2", [("ENV", (("A", "1"), ("B", "2")))]),
        ("# only a comment", []),
        ("", []),
        ("EXPOSE 80", [("EXPOSE", ("80",))]),
    ],
)
def test_parse_changes(text: str, want: list[tuple[str, object]]) -> None:
    """Change strings are read with the Dockerfile parser: continuations, comments,
    any case (an empty EXPOSE is refused there: see INVALID)."""
    assert _instructions(text) == want


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1ns", 1),
        ("1us", 1_000),
        ("1µs", 1_000),
        ("1ms", 1_000_000),
        ("1.5s", 1_500_000_000),
        ("1m30s", 90 * S),
        ("2h", 7200 * S),
        (".5s", S // 2),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "-1s", "1s2", "1 s"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)
