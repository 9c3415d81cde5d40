"""Metadata instructions applied to an image config (pure): the one home of what ENV,
LABEL, USER, WORKDIR, CMD, ENTRYPOINT, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL,
ONBUILD and MAINTAINER do to a config, for the builder (each adds an ``empty_layer``
history entry, as BuildKit's dispatchers do) and for ``lamina commit/import --change``
(as ``docker commit --change``, moby's ``BuildFromConfig``).

Words are expanded with what the stage sees (:class:`~lamina.dockerfile.scope.StageScope`:
ARGs and ENV in a build, the config's Env for ``--change``); CMD, ENTRYPOINT, RUN and
HEALTHCHECK bodies are not (the shell does that). Where Docker's two code paths differed
from each other this follows BuildKit's ``dockerfile2llb`` dispatchers:

- ENTRYPOINT clears CMD unless a CMD came earlier in the same stage or ``--change``
  batch (``if !d.cmdSet { Cmd = nil }``);
- WORKDIR: an absolute path is kept as written, a relative one is joined to the current
  one and cleaned, an empty one (``WORKDIR $UNSET``) keeps the current one
  (``system.NormalizeWorkdir``);
- EXPOSE ``80`` is ``80/tcp``, ``8000-8002/udp`` three ports; an expansion to nothing
  exposes nothing;
- VOLUME paths and USER are single words: ``$VAR`` is not split; an empty USER is "";
- STOPSIGNAL is checked (``signal.ParseSignal``), in a build too;
- the shell form runs as ``SHELL + [text]``; without SHELL, ``/bin/sh -c`` (``cmd /S /C``
  for a Windows image).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import replace

from lamina.dockerfile.durations import parse_duration
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
    Location,
    Maintainer,
    OnBuild,
    ParseError,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from lamina.dockerfile.parser import parse_changes
from lamina.dockerfile.scope import StageScope
from lamina.dockerfile.words import expand_at, expand_pairs, expand_words, limit_at
from lamina.errors import InvalidArgument, LimitExceeded
from lamina.oci import config as oc

DEFAULT_SHELL = ("/bin/sh", "-c")
WINDOWS_SHELL = ("cmd", "/S", "/C")


def shell_of(config: oc.ContainerConfig, os: str = "linux") -> tuple[str, ...]:
    """The SHELL, or the platform's default (BuildKit ``defaultShell``)."""
    if config.shell:
        return config.shell
    return WINDOWS_SHELL if os == "windows" else DEFAULT_SHELL


def argv_of(command: Command, config: oc.ContainerConfig, os: str = "linux") -> tuple[str, ...]:
    """Exec form as written; shell form as ``SHELL + [script]``."""
    if isinstance(command, ExecForm):
        return command.argv
    return (*shell_of(config, os), command.script)


def resolve_workdir(current: str, requested: str) -> str:
    """WORKDIR against the previous one (BuildKit ``system.NormalizeWorkdir``): absolute
    paths are kept as written; relative ones are joined and cleaned (Go's path.Join,
    whose Clean also turns a leading ``//`` into ``/``); an empty one keeps the current."""
    if requested.startswith("/"):
        return requested
    joined = posixpath.normpath(posixpath.join("/", current or "/", requested))
    return "/" + joined.lstrip("/")


def _port_range(where: Location, text: str, spec: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise ParseError(
            where, f"EXPOSE: invalid port {spec!r}", hint="use PORT[-PORT][/tcp|udp|sctp]"
        )
    start, end = int(first), int(last) if sep else int(first)
    if start > 65535 or end > 65535:
        raise ParseError(where, f"EXPOSE: invalid port {spec!r}: ports go up to 65535")
    if start > end:
        raise ParseError(where, f"EXPOSE: invalid port range {spec!r}: {start} is above {end}")
    return start, end


def expose_ports(where: Location, spec: str) -> list[str]:
    """``[[ip:]hostPort:]containerPort[-end][/proto]`` (nat.ParsePortSpec) as
    ``port/proto`` strings; EXPOSE keeps the container port only."""
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ParseError(
            where, f"EXPOSE: invalid protocol {proto!r} in {spec!r}", hint="use tcp, udp or sctp"
        )
    port = port.rsplit(":", 1)[-1]
    if not port:
        raise ParseError(where, f"EXPOSE: no port specified in {spec!r}")
    start, end = _port_range(where, port, spec)
    return [f"{p}/{proto}" for p in range(start, end + 1)]


_SIGNAL_NAMES = (
    "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV "
    "STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU UNUSED URG USR1 USR2 VTALRM WINCH XCPU XFSZ"
)
# Linux signal names as moby's signal.SignalMap has them, plus RTMIN+n and RTMAX-n.
_SIGNALS = frozenset(
    _SIGNAL_NAMES.split()
    + ["RTMIN", "RTMAX"]
    + [f"RTMIN+{n}" for n in range(1, 16)]
    + [f"RTMAX-{n}" for n in range(1, 15)]
)


def check_signal(where: Location, text: str) -> None:
    """A signal name (``SIGTERM``, ``term``, ``SIGRTMIN+3``) or number; numbers stop at
    64, Linux's SIGRTMAX (moby's ParseSignal takes any non-zero number)."""
    if text.isascii() and text.isdigit():
        if not 1 <= int(text) <= 64:
            raise ParseError(where, f"invalid signal {text!r}: signal numbers go from 1 to 64")
        return
    if text.upper().removeprefix("SIG") in _SIGNALS:
        return
    raise ParseError(
        where, f"invalid signal {text!r}", hint="use a name such as SIGTERM or a number"
    )


def _healthcheck(node: Healthcheck) -> oc.Healthcheck:
    if node.command is None:
        return oc.Healthcheck(test=("NONE",))
    if isinstance(node.command, ExecForm):
        test: tuple[str, ...] = ("CMD", *node.command.argv)
    else:
        test = ("CMD-SHELL", node.command.script)
    # The parser has checked the durations (and their 1 ms minimum) already.
    durations = (node.interval, node.timeout, node.start_period, node.start_interval)
    interval, timeout, start_period, start_interval = (
        parse_duration(d) if d is not None else 0 for d in durations
    )
    return oc.Healthcheck(test, interval, timeout, start_period, start_interval, node.retries or 0)


def apply(
    node: Instruction,
    image: oc.ImageConfig,
    scope: StageScope,
    *,
    escape: str = "\\",
    cmd_set: bool = False,
) -> tuple[oc.ImageConfig, str]:
    """Apply one metadata instruction; returns the new config and the history text.

    ``scope`` gives the words their values (ENV is applied to it too); ``cmd_set``
    says a CMD came earlier in this stage or batch, which an ENTRYPOINT then keeps.
    Errors are :class:`ParseError` at the instruction; what the instruction adds to
    the config is charged to ``scope`` (:data:`~lamina.dockerfile.scope.MAX_STAGE_BYTES`),
    a :class:`LimitExceeded` at the instruction past it."""
    try:
        new, created_by = _apply(node, image, scope, escape=escape, cmd_set=cmd_set)
    except LimitExceeded as exc:
        raise limit_at(node.location, exc) from exc
    if not isinstance(node, Env):  # StageScope.apply charged ENV, values and history
        # a LABEL's values are in the config twice: the labels and the history line
        scope.charge(node.location, len(created_by) * (2 if isinstance(node, Label) else 1))
    return new, created_by


def _apply(
    node: Instruction,
    image: oc.ImageConfig,
    scope: StageScope,
    *,
    escape: str,
    cmd_set: bool,
) -> tuple[oc.ImageConfig, str]:
    config = image.config
    variables = scope.variables()
    loc = node.location

    def one(word: str) -> str:
        return expand_at(loc, word, variables, escape=escape)

    def pairs_of(raw: tuple[tuple[str, str], ...], keyword: str) -> list[tuple[str, str]]:
        try:
            pairs = expand_pairs(raw, variables, escape=escape)
        except InvalidArgument as exc:
            raise ParseError(loc, exc.message) from exc
        if any(not key for key, _ in pairs):
            raise ParseError(loc, f"{keyword} names can not be blank")
        return pairs

    def done(new: oc.ContainerConfig, created_by: str) -> tuple[oc.ImageConfig, str]:
        return image.with_config(new), created_by

    if isinstance(node, Env):
        pairs = pairs_of(node.pairs, "ENV")
        scope.apply(node)
        for key, value in pairs:
            config = config.with_env(key, value)
        return done(config, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))
    if isinstance(node, Label):
        pairs = pairs_of(node.pairs, "LABEL")
        labels = dict(config.labels)
        labels.update(pairs)
        return done(
            replace(config, labels=labels), "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
        )
    if isinstance(node, User):
        user = one(node.user)
        return done(replace(config, user=user), f"USER {user}")
    if isinstance(node, Workdir):
        path = resolve_workdir(config.working_dir, one(node.path))
        return done(replace(config, working_dir=path), f"WORKDIR {path}")
    if isinstance(node, (Cmd, Entrypoint)):
        argv = argv_of(node.command, config, image.os)
        text = json.dumps(list(argv))
        if isinstance(node, Cmd):
            return done(replace(config, cmd=argv), f"CMD {text}")
        cmd = config.cmd if cmd_set else None
        return done(replace(config, entrypoint=argv, cmd=cmd), f"ENTRYPOINT {text}")
    if isinstance(node, Expose):
        try:
            words = [w for raw in node.ports for w in expand_words(raw, variables, escape=escape)]
        except InvalidArgument as exc:
            raise ParseError(loc, exc.message) from exc
        ports = [p for word in words for p in expose_ports(loc, word)]
        config = replace(config, exposed_ports=(*config.exposed_ports, *ports))
        return done(config, "EXPOSE " + " ".join(f"map[{p}:{{}}]" for p in ports))
    if isinstance(node, Volume):
        paths = [one(p) for p in node.paths]
        if any(not p for p in paths):
            raise ParseError(loc, "VOLUME specified can not be an empty string")
        return done(
            replace(config, volumes=(*config.volumes, *paths)), f"VOLUME {json.dumps(paths)}"
        )
    if isinstance(node, StopSignal):
        signal = one(node.signal)
        check_signal(loc, signal)
        return done(replace(config, stop_signal=signal), f"STOPSIGNAL {signal}")
    if isinstance(node, Healthcheck):
        check = _healthcheck(node)
        return done(
            replace(config, healthcheck=check), f"HEALTHCHECK {json.dumps(list(check.test))}"
        )
    if isinstance(node, Shell):
        return done(replace(config, shell=node.argv), f"SHELL {json.dumps(list(node.argv))}")
    if isinstance(node, OnBuild):
        on_build = (*config.on_build, node.source)
        return done(replace(config, on_build=on_build), f"ONBUILD {node.source}")
    if isinstance(node, Maintainer):
        # The author is the name with quotes removed and no variables; the history
        # line shows it expanded.
        author = expand_at(loc, node.name, {}, escape=escape)
        return replace(image, author=author), f"MAINTAINER {one(node.name)}"
    raise InvalidArgument(f"{type(node).__name__} is not a metadata instruction")


def apply_changes(config: oc.ImageConfig, changes: Sequence[str]) -> oc.ImageConfig:
    """Apply ``--change`` strings in order, as one batch: joined by newlines and read as
    Dockerfile lines (:func:`~lamina.dockerfile.parser.parse_changes`), words expanded
    from the config's Env as it goes."""
    parsed = parse_changes(changes)
    scope = StageScope({}, {}, env=config.config.env_dict(), escape=parsed.escape)
    cmd_set = False
    for node in parsed.instructions:
        config, _ = apply(node, config, scope, escape=parsed.escape, cmd_set=cmd_set)
        cmd_set = cmd_set or isinstance(node, Cmd)
    return config


def apply_change(config: oc.ImageConfig, instruction: str) -> oc.ImageConfig:
    """Apply one ``--change`` string (which may hold several lines)."""
    return apply_changes(config, [instruction])
