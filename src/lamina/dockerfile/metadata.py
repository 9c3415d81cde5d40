"""Metadata instructions applied to an image config (pure).

ENV, LABEL, USER, WORKDIR, CMD, ENTRYPOINT, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK,
SHELL, ONBUILD and MAINTAINER change the config only; each adds a history entry with
``empty_layer`` (what BuildKit writes). Words are expanded with the stage's ARGs and ENV
(:class:`~lamina.dockerfile.scope.StageScope`); CMD, ENTRYPOINT, RUN and HEALTHCHECK bodies
are not (the shell does that). Each function returns the new container config and the
history ``created_by`` text.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import replace

from lamina.dockerfile.config_changes import parse_duration
from lamina.dockerfile.instructions import (
    Cmd,
    Command,
    Entrypoint,
    Env,
    ExecForm,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    OnBuild,
    ParseError,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from lamina.dockerfile.scope import StageScope
from lamina.dockerfile.words import expand_at, expand_pairs, expand_words
from lamina.errors import InvalidArgument
from lamina.oci import config as oc

DEFAULT_SHELL = ("/bin/sh", "-c")

METADATA = (
    Env,
    Label,
    User,
    Workdir,
    Cmd,
    Entrypoint,
    Expose,
    Volume,
    StopSignal,
    Healthcheck,
    Shell,
    OnBuild,
    Maintainer,
)


def shell_of(config: oc.ContainerConfig) -> tuple[str, ...]:
    return config.shell or DEFAULT_SHELL


def argv_of(command: Command, config: oc.ContainerConfig) -> tuple[str, ...]:
    """Exec form as written; shell form as ``SHELL + [script]``."""
    if isinstance(command, ExecForm):
        return command.argv
    return (*shell_of(config), command.script)


def resolve_workdir(current: str, requested: str) -> str:
    """WORKDIR relative to the previous one (Go's filepath.Join + Clean)."""
    joined = posixpath.normpath(posixpath.join("/", current or "/", requested))
    return "/" + joined.lstrip("/")


def _expose(node: Expose, words: list[str]) -> list[str]:
    ports: list[str] = []
    for spec in words:
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ParseError(node.location, f"EXPOSE: invalid protocol {proto!r} in {spec!r}")
        first, sep, last = port.rsplit(":", 1)[-1].partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ParseError(node.location, f"EXPOSE: invalid port {spec!r}")
        start, end = int(first), int(last) if sep else int(first)
        if end > 65535 or start > end:
            raise ParseError(node.location, f"EXPOSE: invalid port range {spec!r}")
        ports.extend(f"{p}/{proto}" for p in range(start, end + 1))
    return ports


def _duration(node: Healthcheck, name: str, value: str | None) -> int:
    if value is None:
        return 0
    try:
        return parse_duration(value)
    except InvalidArgument as exc:
        raise ParseError(node.location, f"HEALTHCHECK --{name}: {exc.message}") from exc


def apply(
    node: Instruction, config: oc.ContainerConfig, scope: StageScope, escape: str = "\\"
) -> tuple[oc.ContainerConfig, str]:
    """Apply one metadata instruction; returns the new config and history text."""
    variables = scope.variables()
    loc = node.location

    def one(word: str) -> str:
        return expand_at(loc, word, variables, escape=escape)

    if isinstance(node, Env):
        pairs = expand_pairs(node.pairs, variables, escape=escape)
        scope.apply(node)
        for key, value in pairs:
            config = config.with_env(key, value)
        return config, "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
    if isinstance(node, Label):
        pairs = expand_pairs(node.pairs, variables, escape=escape)
        labels = dict(config.labels)
        labels.update(pairs)
        return replace(config, labels=labels), "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
    if isinstance(node, User):
        user = one(node.user)
        return replace(config, user=user), f"USER {user}"
    if isinstance(node, Workdir):
        path = resolve_workdir(config.working_dir, one(node.path))
        return replace(config, working_dir=path), f"WORKDIR {path}"
    if isinstance(node, (Cmd, Entrypoint)):
        argv = argv_of(node.command, config)
        text = json.dumps(list(argv))
        if isinstance(node, Cmd):
            return replace(config, cmd=argv), f"CMD {text}"
        # An ENTRYPOINT resets the CMD inherited from the base (BuildKit: a CMD of this
        # stage that came before it is kept only if given again after).
        return replace(config, entrypoint=argv, cmd=None), f"ENTRYPOINT {text}"
    if isinstance(node, Expose):
        words = [w for raw in node.ports for w in expand_words(raw, variables, escape=escape)]
        ports = _expose(node, words)
        config = replace(config, exposed_ports=(*config.exposed_ports, *ports))
        return config, "EXPOSE " + " ".join(f"map[{p}:{{}}]" for p in ports)
    if isinstance(node, Volume):
        paths = [one(p) for p in node.paths]
        if any(not p for p in paths):
            raise ParseError(loc, "VOLUME specified can not be an empty string")
        return replace(config, volumes=(*config.volumes, *paths)), f"VOLUME {json.dumps(paths)}"
    if isinstance(node, StopSignal):
        signal = one(node.signal)
        return replace(config, stop_signal=signal), f"STOPSIGNAL {signal}"
    if isinstance(node, Healthcheck):
        if node.command is None:
            check = oc.Healthcheck(test=("NONE",))
        else:
            if isinstance(node.command, ExecForm):
                test: tuple[str, ...] = ("CMD", *node.command.argv)
            else:
                test = ("CMD-SHELL", node.command.script)
            check = oc.Healthcheck(
                test,
                _duration(node, "interval", node.interval),
                _duration(node, "timeout", node.timeout),
                _duration(node, "start-period", node.start_period),
                _duration(node, "start-interval", node.start_interval),
                node.retries or 0,
            )
        return replace(config, healthcheck=check), f"HEALTHCHECK {json.dumps(list(check.test))}"
    if isinstance(node, Shell):
        return replace(config, shell=node.argv), f"SHELL {json.dumps(list(node.argv))}"
    if isinstance(node, OnBuild):
        on_build = (*config.on_build, node.source)
        return replace(config, on_build=on_build), f"ONBUILD {node.source}"
    if isinstance(node, Maintainer):
        return config, f"MAINTAINER {one(node.name)}"
    raise InvalidArgument(f"{type(node).__name__} is not a metadata instruction")
