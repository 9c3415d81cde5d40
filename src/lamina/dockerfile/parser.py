"""Dockerfile text to a typed AST (BuildKit ``docker/dockerfile:1`` syntax). Pure: no
I/O, no variable expansion (that happens per step at build time, see
:func:`lamina.dockerfile.words.expand`). Two entry points: :func:`parse` for a whole
Dockerfile, :func:`parse_changes` for ``commit/import --change`` strings. Messages are
BuildKit's where it has one (``instructions/parse.go``), with the position added.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lamina.dockerfile.durations import MIN_HEALTHCHECK_NS, parse_duration
from lamina.dockerfile.instructions import (
    Add,
    Arg,
    ArgDecl,
    Cmd,
    Command,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    ExecForm,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Location,
    Maintainer,
    Mount,
    OnBuild,
    ParseError,
    Run,
    Shell,
    ShellForm,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from lamina.dockerfile.lexer import LogicalLine, lex
from lamina.dockerfile.words import split_raw, unclosed_quote
from lamina.errors import InvalidArgument

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$", re.IGNORECASE)
_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_ALIASES = {
    "dst": "target",
    "destination": "target",
    "src": "source",
    "ro": "readonly",
    "rw": "readwrite",
}
_MOUNT_KEYS = frozenset(
    {"type", "target", "source", "from", "readonly", "readwrite", "id", "sharing", "mode"}
    | {"uid", "gid", "required", "size", "env", "bind-propagation", "consistency"}
    | set(_MOUNT_ALIASES)
)
_OCTAL_MODE = re.compile(r"^[0-7]{1,4}$")
_SYMBOLIC_MODE = re.compile(
    r"^[ugoa]*[-+=][rwxXst]*([-+=][rwxXst]*)*(,[ugoa]*[-+=][rwxXst]*([-+=][rwxXst]*)*)*$"
)
_BOOL = {"": True, "true": True, "false": False}
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


@dataclass(frozen=True, slots=True)
class _Args:
    """An instruction's arguments: ``text`` starts at ``offset`` in the logical line."""

    line: LogicalLine
    keyword: str
    text: str
    offset: int
    escape: str

    @property
    def location(self) -> Location:
        return self.line.location(0)

    def at(self, offset: int) -> Location:
        return self.line.location(self.offset + offset)

    def fail(self, offset: int | None, message: str, hint: str | None = None) -> ParseError:
        where = self.location if offset is None else self.at(offset)
        return ParseError(where, message, hint=hint)

    def words(self) -> list[tuple[int, str]]:
        opened = unclosed_quote(self.text, escape=self.escape)
        if opened is not None:
            quote = self.text[opened]
            kind = "single" if quote == "'" else "double"
            raise self.fail(
                opened, f"{self.keyword}: unterminated {quote} quote (missing closing {kind} quote)"
            )
        return split_raw(self.text, escape=self.escape)

    def require(self, what: str = "at least one argument", hint: str | None = None) -> None:
        if not self.text.strip():
            raise self.fail(None, f"{self.keyword} requires {what}", hint=hint)


@dataclass(slots=True)
class _Flags:
    values: dict[str, str | bool | list[str]]
    offsets: dict[str, list[int]]

    def at(self, name: str, index: int = -1) -> int:
        return self.offsets[name][index]

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def flag(self, name: str) -> bool:
        return self.values.get(name) is True

    def many(self, name: str) -> list[str]:
        value = self.values.get(name)
        return value if isinstance(value, list) else []


def _parse_flags(args: _Args, spec: dict[str, str]) -> tuple[_Flags, _Args]:
    """Leading ``--name[=value]`` words; ``spec`` maps name to ``str``, ``bool`` or
    ``list`` (repeatable). Returns the flags and the arguments after them."""
    flags = _Flags({}, {})
    rest = len(args.text)
    for offset, word in split_raw(args.text, escape=args.escape):
        if not word.startswith("--"):
            rest = offset
            break
        if word == "--":  # end of flags
            rest = offset + 2
            break
        opened = unclosed_quote(word, escape=args.escape)
        if opened is not None:
            raise args.fail(offset + opened, f"unterminated {word[opened]} quote in a flag")
        name, eq, value = word[2:].partition("=")
        kind = spec.get(name)
        if kind is None:
            known = ", ".join(f"--{n}" for n in spec) or "none"
            raise args.fail(offset, f"unknown flag: --{name} for {args.keyword} (known: {known})")
        if kind != "list" and name in flags.values:
            raise args.fail(offset, f"duplicate flag --{name}", hint="give it once")
        flags.offsets.setdefault(name, []).append(offset)
        if kind == "bool":
            if value not in _BOOL:
                raise args.fail(offset, f"--{name} takes true or false, not {value!r}")
            flags.values[name] = _BOOL[value]
        elif not eq or not value:
            raise args.fail(offset, f"--{name} requires a value (--{name}=...)")
        elif kind == "list":
            current = flags.values.setdefault(name, [])
            assert isinstance(current, list)
            current.append(value)
        else:
            flags.values[name] = value
    return flags, _Args(args.line, args.keyword, args.text[rest:], args.offset + rest, args.escape)


def _json_array(text: str) -> list[str] | None:
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None  # not JSON: the shell form (reference, "Shell and exec form")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(args: _Args) -> Command:
    argv = _json_array(args.text)
    if argv is not None:
        return ExecForm(tuple(argv))
    return ShellForm(args.text.strip())


def _pairs(args: _Args) -> tuple[tuple[str, str], ...]:
    """``k=v k2="v 2"`` pairs, or the legacy ``k v with spaces`` (one pair)."""
    args.require()
    words = args.words()
    if "=" not in words[0][1]:
        # The legacy "KEY name value...": BuildKit splits the name off at the first
        # whitespace (quotes or not); the value is the rest of the line.
        parts = _WHITESPACE.split(args.text.strip(), maxsplit=1)
        if len(parts) < 2:
            raise args.fail(
                words[0][0],
                f"{args.keyword} must have two arguments: {parts[0]} has no value",
                hint=f"write {parts[0]}=VALUE",
            )
        return ((parts[0], parts[1]),)
    pairs = []
    for offset, word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise args.fail(offset, f"{args.keyword}: can't find = in {word!r}, expected key=value")
        if not key:
            raise args.fail(offset, f"{args.keyword} names can not be blank")
        pairs.append((key, value))
    return tuple(pairs)


def _from(args: _Args) -> From:
    flags, rest = _parse_flags(args, {"platform": "str"})
    rest.require("an image (FROM IMAGE [AS NAME])")
    words = rest.words()
    name = None
    if len(words) == 3 and words[1][1].lower() == "as":
        name = words[2][1]
        if not _STAGE_NAME.match(name):
            raise rest.fail(
                words[2][0],
                f"invalid stage name {name!r}",
                hint="start with a letter; use letters, digits, '-', '_' and '.'",
            )
    elif len(words) != 1:
        raise rest.fail(words[1][0], "FROM takes IMAGE [AS NAME]")
    return From(args.location, words[0][1], flags.text("platform"), name)


def _arg(args: _Args) -> Arg:
    args.require("a name (ARG NAME[=DEFAULT])")
    decls = []
    for offset, word in args.words():
        name, eq, default = word.partition("=")
        if not name:
            raise args.fail(offset, "ARG: a name can not be blank")
        decls.append(ArgDecl(name, default if eq else None))
    return Arg(args.location, tuple(decls))


def _mount(args: _Args, offset: int, value: str) -> Mount:
    """``--mount=`` is one CSV record of ``key=value`` fields (reference, "RUN --mount")."""
    try:
        (fields,) = csv.reader([value])
    except (csv.Error, ValueError) as exc:
        raise args.fail(offset, f"--mount: cannot parse {value!r}: {exc}") from exc
    options: list[tuple[str, str]] = []
    mount_type = "bind"  # the default type
    for field in fields:
        if not field:
            continue
        key, eq, val = field.partition("=")
        key = key.strip().lower()
        if key not in _MOUNT_KEYS:
            raise args.fail(offset, f"--mount: unknown option {key!r}")
        if key == "type":
            if val not in _MOUNT_TYPES:
                raise args.fail(
                    offset,
                    f"unknown mount type {val!r}",
                    hint="use one of " + ", ".join(_MOUNT_TYPES),
                )
            mount_type = val
            continue
        if key == "sharing" and val not in ("shared", "private", "locked"):
            raise args.fail(
                offset, f"--mount: sharing must be shared, private or locked, not {val!r}"
            )
        options.append((_MOUNT_ALIASES.get(key, key), val if eq else "true"))
    mount = Mount(mount_type, tuple(options))
    if mount_type in ("bind", "cache", "tmpfs") and mount.get("target") is None:
        raise args.fail(
            offset, f"--mount=type={mount_type} requires target=", hint="add target=/path"
        )
    return mount


def _run(args: _Args) -> Run:
    flags, rest = _parse_flags(
        args, {"mount": "list", "network": "str", "security": "str", "device": "list"}
    )
    rest.require()
    mounts = tuple(_mount(args, flags.at("mount", i), v) for i, v in enumerate(flags.many("mount")))
    network, security = flags.text("network"), flags.text("security")
    if network is not None and network not in ("default", "none", "host"):
        raise args.fail(flags.at("network"), f"unknown network mode {network!r}")
    if security is not None and security not in ("insecure", "sandbox"):
        raise args.fail(flags.at("security"), f"unknown security mode {security!r}")
    return Run(
        args.location,
        _command(rest),
        mounts,
        network,
        security,
        tuple(flags.many("device")),
        args.line.heredocs,
    )


def _paths(rest: _Args) -> tuple[tuple[str, ...], str]:
    argv = _json_array(rest.text)
    words = argv if argv is not None else [w for _, w in rest.words()]
    if len(words) < 2:
        raise rest.fail(
            len(rest.text) - len(rest.text.lstrip()) if rest.text.strip() else None,
            f"{rest.keyword} requires at least two arguments: SOURCE... DEST",
        )
    return tuple(words[:-1]), words[-1]


_COPY_FLAGS = {
    "chown": "str",
    "chmod": "str",
    "link": "bool",
    "parents": "bool",
    "exclude": "list",
}


def _check_chmod(args: _Args, flags: _Flags) -> None:
    """``--chmod`` is octal (``0755``) or symbolic (``u=rwX,go=rX``, BuildKit 1.14+);
    a ``$VAR`` is left for build time."""
    mode = flags.text("chmod")
    if mode is None or "$" in mode:
        return
    if not (_OCTAL_MODE.match(mode) or _SYMBOLIC_MODE.match(mode)):
        raise args.fail(
            flags.at("chmod"),
            f"--chmod: {mode!r} is not an octal or symbolic mode",
            hint="write e.g. --chmod=0755 or --chmod=u=rwX,go=rX",
        )


def _copy(args: _Args) -> Copy:
    flags, rest = _parse_flags(args, {"from": "str", **_COPY_FLAGS})
    _check_chmod(args, flags)
    sources, dest = _paths(rest)
    return Copy(
        args.location,
        sources,
        dest,
        flags.text("from"),
        flags.text("chown"),
        flags.text("chmod"),
        flags.flag("link"),
        flags.flag("parents"),
        tuple(flags.many("exclude")),
        args.line.heredocs,
    )


def _add(args: _Args) -> Add:
    spec = {**_COPY_FLAGS, "checksum": "str", "keep-git-dir": "bool", "unpack": "bool"}
    flags, rest = _parse_flags(args, spec)
    _check_chmod(args, flags)
    sources, dest = _paths(rest)
    unpack = flags.values.get("unpack")
    return Add(
        args.location,
        sources,
        dest,
        flags.text("chown"),
        flags.text("chmod"),
        flags.flag("link"),
        flags.flag("parents"),
        tuple(flags.many("exclude")),
        flags.text("checksum"),
        flags.flag("keep-git-dir"),
        unpack if isinstance(unpack, bool) else None,
        args.line.heredocs,
    )


def _single(args: _Args, what: str = "exactly one argument") -> str:
    args.require(what)
    return args.text.strip()


def _healthcheck(args: _Args) -> Healthcheck:
    spec = {
        "interval": "str",
        "timeout": "str",
        "start-period": "str",
        "start-interval": "str",
        "retries": "str",
    }
    flags, rest = _parse_flags(args, spec)
    rest.require("NONE or CMD ...")
    words = rest.words()
    kind = words[0][1].upper()
    if kind == "NONE":
        if len(words) > 1 or flags.values:
            raise rest.fail(words[0][0], "HEALTHCHECK NONE takes no arguments")
        return Healthcheck(args.location, None)
    if kind != "CMD":
        raise rest.fail(
            words[0][0],
            f"HEALTHCHECK: unknown type {words[0][1]!r} (expects NONE or CMD)",
            hint="try HEALTHCHECK CMD ...",
        )
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.text(name)
        if value is None:
            continue
        try:
            ns = parse_duration(value)
        except InvalidArgument as exc:
            raise args.fail(
                flags.at(name),
                f"--{name}: {value!r} is not a duration ({exc.message})",
                hint=exc.hint,
            ) from exc
        if 0 < ns < MIN_HEALTHCHECK_NS:  # BuildKit parseOptInterval
            raise args.fail(flags.at(name), f"--{name}: {value!r} cannot be less than 1ms")
    retries = flags.text("retries")
    if retries is not None and not (retries.isascii() and retries.lstrip("-").isdigit()):
        raise args.fail(flags.at("retries"), f"--retries: {retries!r} is not a number")
    if retries is not None and int(retries) < 0:
        raise args.fail(flags.at("retries"), f"--retries cannot be negative ({retries})")
    skip = words[0][0] + len(words[0][1])
    body = _Args(rest.line, "HEALTHCHECK CMD", rest.text[skip:], rest.offset + skip, rest.escape)
    if not body.text.strip():
        raise rest.fail(words[0][0], "HEALTHCHECK CMD requires a command")
    return Healthcheck(
        args.location,
        _command(body),
        flags.text("interval"),
        flags.text("timeout"),
        flags.text("start-period"),
        flags.text("start-interval"),
        int(retries) if retries is not None else None,
    )


def _shell(args: _Args) -> Shell:
    args.require('a JSON array (SHELL ["/bin/sh", "-c"])')
    argv = _json_array(args.text)
    if not argv:
        raise args.fail(
            len(args.text) - len(args.text.lstrip()),
            "SHELL requires the arguments to be a non-empty JSON array of strings",
            hint='write SHELL ["/bin/bash", "-c"]',
        )
    return Shell(args.location, tuple(argv))


def _volume(args: _Args) -> Volume:
    args.require()
    argv = _json_array(args.text)
    paths = argv if argv is not None else [w for _, w in args.words()]
    if not paths or any(not p.strip() for p in paths):
        raise args.fail(0, "VOLUME specified can not be an empty string")
    return Volume(args.location, tuple(paths))


def _required_command(args: _Args) -> Command:
    args.require()
    return _command(args)


def _expose(args: _Args) -> Expose:
    args.require(hint="EXPOSE 80/tcp")
    return Expose(args.location, tuple(w for _, w in args.words()))


def _onbuild(args: _Args) -> OnBuild:
    args.require("an instruction")
    lead = len(args.text) - len(args.text.lstrip())
    inner = args.line.tail(args.offset + lead)
    inner = LogicalLine(inner.file, args.text[lead:], inner.segments, inner.heredocs)
    keyword = inner.text.split(None, 1)[0].upper()
    if keyword == "ONBUILD":
        raise args.fail(lead, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if keyword in ("FROM", "MAINTAINER"):
        raise args.fail(lead, f"{keyword} isn't allowed as an ONBUILD trigger")
    return OnBuild(args.location, _instruction(inner, args.escape), inner.text)


_PARSERS: dict[str, Callable[[_Args], Instruction]] = {
    "FROM": _from,
    "ARG": _arg,
    "ENV": lambda a: Env(a.location, _pairs(a)),
    "LABEL": lambda a: Label(a.location, _pairs(a)),
    "RUN": _run,
    "COPY": _copy,
    "ADD": _add,
    "WORKDIR": lambda a: Workdir(a.location, _single(a, "a path")),
    "USER": lambda a: User(a.location, _single(a)),
    "CMD": lambda a: Cmd(a.location, _required_command(a)),
    "ENTRYPOINT": lambda a: Entrypoint(a.location, _required_command(a)),
    "EXPOSE": _expose,
    "VOLUME": _volume,
    "STOPSIGNAL": lambda a: StopSignal(a.location, _single(a)),
    "HEALTHCHECK": _healthcheck,
    "SHELL": _shell,
    "ONBUILD": _onbuild,
    "MAINTAINER": lambda a: Maintainer(a.location, _single(a)),
}


_TAKES_FLAGS = frozenset({"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"})


def _instruction(line: LogicalLine, escape: str) -> Instruction:
    m = re.match(r"(\S+)(\s*)", line.text)
    assert m is not None  # the lexer never yields blank lines
    keyword = m.group(1).upper()
    parser = _PARSERS.get(keyword)
    if parser is None:
        raise ParseError(
            line.location(0),
            f"unknown instruction: {m.group(1)}",
            hint="see the Dockerfile reference for the instructions",
        )
    text = line.text[m.end() :].rstrip()
    args = _Args(line, keyword, text, m.end(), escape)
    if keyword not in _TAKES_FLAGS:
        # BuildKit extracts leading --flags from every instruction, and those without
        # flags reject them: "CMD --x" is an error, not a command.
        args = _parse_flags(args, {})[1]
    return parser(args)


def parse(source: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile. Raises :class:`ParseError` (an ``InvalidFormat``)."""
    lexed = lex(source, file)
    global_args: list[Arg] = []
    stages: list[Stage] = []
    current: From | None = None
    body: list[Instruction] = []
    names: set[str] = set()
    for line in lexed.lines:
        node = _instruction(line, lexed.escape)
        if isinstance(node, From):
            if current is not None:
                stages.append(Stage(len(stages), current, tuple(body)))
            if node.name is not None:
                if node.name.lower() in names:
                    raise ParseError(node.location, f"duplicate stage name {node.name!r}")
                names.add(node.name.lower())
            current, body = node, []
        elif current is None:
            if not isinstance(node, Arg):
                raise ParseError(
                    node.location,
                    f"{line.text.split(None, 1)[0].upper()} before FROM: "
                    "only ARG may come before the first FROM",
                )
            global_args.append(node)
        else:
            body.append(node)
    if current is None:
        raise ParseError(
            Location(file, 1, 1),
            "no FROM instruction" if lexed.lines else "the file has no instructions",
            hint="a Dockerfile starts with FROM IMAGE (after optional ARGs)",
        )
    stages.append(Stage(len(stages), current, tuple(body)))
    originals = tuple((line.location(0), line.text) for line in lexed.lines)
    return Dockerfile(
        file, lexed.escape, lexed.directives, tuple(global_args), tuple(stages), originals
    )


# What ``docker commit --change`` accepts (moby's validCommitCommands): the instructions
# that change the config alone. The others need a build.
CHANGE_INSTRUCTIONS = (
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


@dataclass(frozen=True, slots=True)
class Changes:
    """``--change`` strings, parsed: the escape character and the instructions."""

    escape: str
    instructions: tuple[Instruction, ...]


def parse_changes(changes: Sequence[str], file: str = "--change") -> Changes:
    """``--change`` strings as moby's ``BuildFromConfig`` reads them: joined by newlines
    and lexed as one Dockerfile with no FROM (directives, comments, continuations). Each
    instruction is checked against :data:`CHANGE_INSTRUCTIONS` before it is parsed, so
    ``RUN``, ``COPY``, ``FROM``... are refused as such."""
    lexed = lex("\n".join(changes), file)
    instructions: list[Instruction] = []
    for line in lexed.lines:
        keyword = line.text.split(None, 1)[0].upper()
        if keyword not in CHANGE_INSTRUCTIONS:
            raise ParseError(
                line.location(0),
                f"{keyword} is not a valid change command",
                hint=f"use one of {', '.join(CHANGE_INSTRUCTIONS)}",
            )
        instructions.append(_instruction(line, lexed.escape))
    return Changes(lexed.escape, tuple(instructions))
