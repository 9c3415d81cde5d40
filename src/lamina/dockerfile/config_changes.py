"""Dockerfile instructions applied to an image config: ``lamina import --change``.

The same instructions and meanings as ``docker import --change`` and
``docker commit --change``: CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD,
STOPSIGNAL, USER, VOLUME and WORKDIR (Dockerfile reference for each). Others (RUN, COPY,
FROM...) need a build and are refused.

- CMD and ENTRYPOINT take the exec form (a JSON array of strings) or the shell form
  (any other text, run as ``<Shell> <text>``; Shell defaults to ``/bin/sh -c``).
  ENTRYPOINT clears CMD unless a CMD came earlier in the same :func:`apply_changes`.
- ENV and LABEL take ``k=v k2="v 2"`` or the legacy ``k v...`` (one pair, the value
  being the rest of the line). Their words, and those of EXPOSE, USER, VOLUME, WORKDIR
  and STOPSIGNAL, have quotes removed and ``$VAR`` expanded from the config's Env.
- EXPOSE ``80`` is ``80/tcp``; ``8000-8002/udp`` is three ports.
- One change string may hold several lines; ``\\`` continues a line, ``#`` lines are
  comments.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lamina.dockerfile.words import expand, expand_words, split_raw
from lamina.errors import InvalidArgument
from lamina.oci.config import ContainerConfig, Healthcheck, ImageConfig

VALID_CHANGES = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
_CONTINUATION = re.compile(r"\\[ \t]*$")
_INSTRUCTION = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


def _bad(message: str, hint: str | None = None) -> InvalidArgument:
    return InvalidArgument(message, hint=hint)


def split_instructions(change: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` for each instruction in a change string."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []

    def emit() -> None:
        m = _INSTRUCTION.fullmatch("".join(pending).strip())
        if m is not None:
            out.append((m.group(1).upper(), m.group(2).strip()))
        pending.clear()

    for line in change.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _CONTINUATION.search(line):
            pending.append(_CONTINUATION.sub("", line))
            continue
        pending.append(line)
        emit()
    emit()
    return out


def _json_form(text: str) -> list[str] | None:
    """The exec form if ``text`` is a JSON array of strings, else None (shell form)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


@dataclass(slots=True)
class _State:
    """The config being changed, and which instructions set what."""

    image: ImageConfig
    cmd_set: bool = False

    @property
    def cc(self) -> ContainerConfig:
        return self.image.config

    def set(self, **fields: object) -> None:
        self.image = self.image.with_config(replace(self.cc, **fields))  # type: ignore[arg-type]

    def shell(self) -> list[str]:
        if self.cc.shell:
            return list(self.cc.shell)
        return ["cmd", "/S", "/C"] if self.image.os == "windows" else ["/bin/sh", "-c"]

    def command(self, keyword: str, rest: str) -> tuple[str, ...]:
        exec_form = _json_form(rest)
        if exec_form is not None:
            return tuple(exec_form)
        if not rest:
            raise _bad(f"{keyword} requires at least one argument")
        return (*self.shell(), rest)


def _pairs(keyword: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    words = [w for _, w in split_raw(rest)]
    if not words:
        raise _bad(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        # Legacy "KEY name value...": the value is the rest of the line.
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise _bad(f"{keyword} must have two arguments", hint=f"use {keyword} name=value")
        raw = [(parts[0], parts[1])]
    else:
        raw = []
        for word in words:
            if "=" not in word:
                raise _bad(
                    f"syntax error: can't find = in {word!r}; it must be of the form name=value"
                )
            k, _, v = word.partition("=")
            raw.append((k, v))
    out: list[tuple[str, str]] = []
    for k, v in raw:
        key, value = expand(k, env), expand(v, env)
        if not key:
            raise _bad(f"{keyword} names can not be blank")
        out.append((key, value))
    return out


def _port_range(text: str, spec: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise _bad(f"invalid port {spec!r}", hint="use PORT[-PORT][/tcp|udp|sctp]")
    start, end = int(first), int(last) if sep else int(first)
    if start > 65535 or end > 65535:
        raise _bad(f"invalid port {spec!r}: ports go up to 65535")
    if start > end:
        raise _bad(f"invalid port range {spec!r}: {start} is above {end}")
    return start, end


def _expose(spec: str) -> list[str]:
    # nat.ParsePortSpec: [[ip:]hostPort:]containerPort[/proto]; EXPOSE keeps the
    # container port only.
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise _bad(f"invalid protocol {proto!r} in {spec!r}", hint="use tcp, udp or sctp")
    port = port.rsplit(":", 1)[-1]
    if not port:
        raise _bad(f"no port specified in {spec!r}")
    start, end = _port_range(port, spec)
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


def _check_signal(text: str) -> None:
    if text.isdigit():
        if not 1 <= int(text) <= 64:
            raise _bad(f"invalid signal {text!r}: signal numbers go from 1 to 64")
        return
    if text.upper().removeprefix("SIG") in _SIGNALS:
        return
    raise _bad(f"invalid signal {text!r}", hint="use a name such as SIGTERM or a number")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_UNIT_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """A Go duration (``1m30s``, ``500ms``, ``0``) in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            raise _bad(f"invalid duration {text!r}", hint="e.g. 30s, 1m30s, 500ms")
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if not text:
        raise _bad("empty duration")
    return int(total)


def _healthcheck(rest: str) -> Healthcheck:
    words = rest.split()
    if words and words[0].upper() == "NONE":
        if len(words) > 1:
            raise _bad("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(test=("NONE",))
    values = {"interval": 0, "timeout": 0, "start-period": 0, "start-interval": 0, "retries": 0}
    body = rest
    while body.startswith("--"):
        flag, _, body = body.partition(" ")
        body = body.lstrip()
        name, eq, value = flag[2:].partition("=")
        if name not in values:
            raise _bad(f"unknown flag --{name} for HEALTHCHECK")
        if not eq:
            raise _bad(f"HEALTHCHECK --{name} needs a value: --{name}=VALUE")
        if name == "retries":
            if not value.lstrip("-").isdigit():
                raise _bad(f"invalid HEALTHCHECK --retries {value!r}: not a number")
            values[name] = int(value)
            if values[name] < 0:
                raise _bad(f"HEALTHCHECK --retries cannot be negative ({value})")
        else:
            ns = parse_duration(value)
            # Docker: a duration is 0 (inherit) or at least 1 ms.
            if 0 < ns < 1_000_000:
                raise _bad(f"HEALTHCHECK --{name} {value!r} cannot be less than 1ms")
            values[name] = ns
    kind, _, command = body.partition(" ")
    if kind.upper() != "CMD":
        raise _bad(f"unknown type {kind!r} in HEALTHCHECK", hint="try HEALTHCHECK CMD ...")
    command = command.strip()
    exec_form = _json_form(command)
    if exec_form is not None:
        test: tuple[str, ...] = ("CMD", *exec_form)
    elif command:
        test = ("CMD-SHELL", command)
    else:
        raise _bad("HEALTHCHECK CMD requires a command")
    return Healthcheck(
        test,
        values["interval"],
        values["timeout"],
        values["start-period"],
        values["start-interval"],
        values["retries"],
    )


def _workdir(current: str, requested: str) -> str:
    if not requested:
        raise _bad("WORKDIR requires a path")
    if requested.startswith("/"):
        return requested
    # Go's filepath.Join cleans, and Clean turns a leading "//" into "/".
    joined = posixpath.normpath(posixpath.join("/", current, requested))
    return "/" + joined.lstrip("/")


def _apply(state: _State, keyword: str, rest: str) -> None:
    env = state.cc.env_dict()
    if keyword == "CMD":
        state.set(cmd=state.command("CMD", rest))
        state.cmd_set = True
    elif keyword == "ENTRYPOINT":
        entrypoint = state.command("ENTRYPOINT", rest)
        state.set(entrypoint=entrypoint, **({} if state.cmd_set else {"cmd": None}))
    elif keyword == "ENV":
        # All pairs expand against the Env from before this instruction, as Docker does
        # (ENV a=1 b=$a gives b the old a); the next instruction sees the new values.
        cc = state.cc
        for key, value in _pairs("ENV", rest, env):
            cc = cc.with_env(key, value)
        state.image = state.image.with_config(cc)
    elif keyword == "LABEL":
        labels = dict(state.cc.labels)
        labels.update(_pairs("LABEL", rest, env))
        state.set(labels=labels)
    elif keyword == "EXPOSE":
        ports = [p for word in expand_words(rest, env) for p in _expose(word)]
        if not ports:
            raise _bad("EXPOSE requires at least one argument")
        state.set(exposed_ports=(*state.cc.exposed_ports, *ports))
    elif keyword == "USER":
        user = expand(rest, env)
        if not user:
            raise _bad("USER requires exactly one argument")
        state.set(user=user)
    elif keyword == "VOLUME":
        raw = _json_form(rest)
        words = [expand(w, env) for w in raw] if raw is not None else expand_words(rest, env)
        if not words or any(not w for w in words):
            raise _bad("VOLUME specified can not be an empty string")
        state.set(volumes=(*state.cc.volumes, *words))
    elif keyword == "WORKDIR":
        state.set(working_dir=_workdir(state.cc.working_dir, expand(rest, env)))
    elif keyword == "STOPSIGNAL":
        signal = expand(rest, env)
        _check_signal(signal)
        state.set(stop_signal=signal)
    elif keyword == "ONBUILD":
        trigger = rest.split(None, 1)[0].upper() if rest else ""
        if not trigger:
            raise _bad("ONBUILD requires an instruction")
        if trigger == "ONBUILD":
            raise _bad("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("FROM", "MAINTAINER"):
            raise _bad(f"{trigger} isn't allowed as an ONBUILD trigger")
        state.set(on_build=(*state.cc.on_build, rest))
    elif keyword == "HEALTHCHECK":
        state.set(healthcheck=_healthcheck(rest))
    else:
        raise _bad(
            f"{keyword} is not a valid change command",
            hint=f"use one of {', '.join(VALID_CHANGES)}",
        )


def apply_changes(config: ImageConfig, changes: Sequence[str]) -> ImageConfig:
    """Apply ``--change`` strings in order, as one batch (see ENTRYPOINT above)."""
    state = _State(config)
    for change in changes:
        for keyword, rest in split_instructions(change):
            _apply(state, keyword, rest)
    return state.image


def apply_change(config: ImageConfig, instruction: str) -> ImageConfig:
    """Apply one ``--change`` string (which may hold several lines)."""
    return apply_changes(config, [instruction])
