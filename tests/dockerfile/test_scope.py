"""ARG/ENV scoping over parsed Dockerfiles (reference, "ARG" / "Scope")."""

from __future__ import annotations

from lamina.dockerfile import parse
from lamina.dockerfile.instructions import Arg, Env, Run
from lamina.dockerfile.scope import StageScope, global_scope
from lamina.dockerfile.words import expand

SOURCE = """\
ARG VERSION=latest
ARG BASE=busybox:${VERSION}
ARG ONLY_GLOBAL=g
ARG NODEFAULT
FROM $BASE AS one
RUN echo $VERSION
ARG VERSION
ARG LOCAL=l-${VERSION}
ENV LOCAL=env-wins X=$LOCAL
ARG CONT=${ONLY_GLOBAL:-none}
ARG NODEFAULT
RUN echo done
"""


def _walk(scope: StageScope, instructions: tuple[object, ...]) -> list[dict[str, str]]:
    seen = []
    for node in instructions:
        if isinstance(node, (Arg, Env)):
            scope.apply(node)
        elif isinstance(node, Run):
            seen.append(scope.variables())
    return seen


def test_global_args_expand_from() -> None:
    df = parse(SOURCE)
    g = global_scope(df, {})
    assert g == {"VERSION": "latest", "BASE": "busybox:latest", "ONLY_GLOBAL": "g"}
    assert expand(df.stages[0].base.image, g) == "busybox:latest"
    g = global_scope(df, {"VERSION": "1.36", "NODEFAULT": "n"}, {"TARGETARCH": "amd64"})
    assert g["BASE"] == "busybox:1.36" and g["NODEFAULT"] == "n" and g["TARGETARCH"] == "amd64"


def test_stage_scope_rules() -> None:
    df = parse(SOURCE)
    g = global_scope(df, {})
    scope = StageScope({}, g, env={"PATH": "/bin"})
    first, second = _walk(scope, df.stages[0].instructions)
    # global ARGs are not visible in a stage until re-declared
    assert first == {"PATH": "/bin"}
    assert second["VERSION"] == "latest"  # re-declared without value: the global value
    assert scope.args["LOCAL"] == "l-latest"  # default expanded at declaration
    assert second["LOCAL"] == "env-wins"  # ENV wins over ARG
    assert second["X"] == "l-latest"  # ENV saw the ARG value (old value rule)
    assert second["CONT"] == "none"  # ONLY_GLOBAL was never re-declared in the stage
    assert "NODEFAULT" not in second  # declared, no value anywhere: unset
    assert scope.env == {"PATH": "/bin", "LOCAL": "env-wins", "X": "l-latest"}


def test_build_args_override_and_are_tracked() -> None:
    df = parse(SOURCE)
    g = global_scope(df, {"VERSION": "2"})
    scope = StageScope({"VERSION": "3", "LOCAL": "cli", "HTTP_PROXY": "http://p", "Z": "z"}, g)
    _, second = _walk(scope, df.stages[0].instructions)
    assert second["VERSION"] == "3"  # the build arg beats the global value
    assert scope.args["LOCAL"] == "cli"
    assert second["HTTP_PROXY"] == "http://p"  # predefined: no declaration needed
    assert "Z" not in second  # undeclared build args stay out
    assert scope.used_build_args == {"VERSION", "LOCAL"}


def test_inherited_args() -> None:
    scope = StageScope({}, {}, inherited_args={"A": "from-parent"})
    assert scope.variables() == {"A": "from-parent"}
