"""The typed, frozen AST of a Dockerfile.

Values are kept *raw* (quotes and ``$VAR`` still in them): they are expanded at build
time with the ARG/ENV scope of the step (:func:`lamina.dockerfile.words.expand`). RUN, CMD
and ENTRYPOINT bodies are never expanded by the builder; the shell does that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from lamina.errors import InvalidFormat


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ParseError(InvalidFormat):
    """A malformed Dockerfile; the message starts with ``file:line:column:``."""

    def __init__(self, location: Location, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{location}: {message}", hint=hint)
        self.location = location
        self.reason = message


@dataclass(frozen=True, slots=True)
class Heredoc:
    """``<<NAME`` (``chomp``: ``<<-``, leading tabs stripped; ``expand`` false when the
    delimiter was quoted). ``content`` ends with a newline unless it is empty."""

    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int | None = None


_HEREDOC_SOURCE = re.compile(r"""^\d*<<-?(["']?)([^"']+)\1$""")


def heredoc_source(word: str, heredocs: tuple[Heredoc, ...]) -> Heredoc | None:
    """The heredoc a ``COPY``/``ADD`` source word (``<<EOF``, ``<<-"EOF"``) stands for."""
    m = _HEREDOC_SOURCE.match(word)
    if m is None:
        return None
    for heredoc in heredocs:
        if heredoc.name == m.group(2):
            return heredoc
    return None


@dataclass(frozen=True, slots=True)
class ShellForm:
    """The command as one string for the ``SHELL`` (default ``/bin/sh -c``)."""

    script: str


@dataclass(frozen=True, slots=True)
class ExecForm:
    """``["executable", "arg", ...]``: run directly, no shell, no expansion."""

    argv: tuple[str, ...]


Command: TypeAlias = ShellForm | ExecForm


@dataclass(frozen=True, slots=True)
class Mount:
    """``RUN --mount=type=...,k=v,...``; ``options`` in the order written (flags without
    ``=`` such as ``ro`` get the value ``"true"``)."""

    type: str
    options: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.options:
            if k == key:
                return v
        return default


@dataclass(frozen=True, slots=True)
class From:
    location: Location
    image: str
    platform: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ArgDecl:
    name: str
    default: str | None


@dataclass(frozen=True, slots=True)
class Arg:
    location: Location
    args: tuple[ArgDecl, ...]


@dataclass(frozen=True, slots=True)
class Env:
    location: Location
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Label:
    location: Location
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Run:
    location: Location
    command: Command
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None
    device: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, slots=True)
class Copy:
    """``COPY``; ``sources`` may name heredocs (``<<EOF``), found in ``heredocs``."""

    location: Location
    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, slots=True)
class Add:
    location: Location
    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, slots=True)
class Workdir:
    location: Location
    path: str


@dataclass(frozen=True, slots=True)
class User:
    location: Location
    user: str


@dataclass(frozen=True, slots=True)
class Cmd:
    location: Location
    command: Command


@dataclass(frozen=True, slots=True)
class Entrypoint:
    location: Location
    command: Command


@dataclass(frozen=True, slots=True)
class Expose:
    location: Location
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Volume:
    location: Location
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StopSignal:
    location: Location
    signal: str


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """``HEALTHCHECK NONE`` has ``command`` None. Durations are raw strings (``30s``)."""

    location: Location
    command: Command | None
    interval: str | None = None
    timeout: str | None = None
    start_period: str | None = None
    start_interval: str | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True)
class Shell:
    location: Location
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Maintainer:
    location: Location
    name: str


@dataclass(frozen=True, slots=True)
class OnBuild:
    """``ONBUILD <instruction>``; ``source`` is the trigger text as written (what the
    image config's ``OnBuild`` list stores)."""

    location: Location
    instruction: Instruction
    source: str


Instruction: TypeAlias = (
    From
    | Arg
    | Env
    | Label
    | Run
    | Copy
    | Add
    | Workdir
    | User
    | Cmd
    | Entrypoint
    | Expose
    | Volume
    | StopSignal
    | Healthcheck
    | Shell
    | Maintainer
    | OnBuild
)


@dataclass(frozen=True, slots=True)
class Stage:
    """One ``FROM`` and what follows it up to the next ``FROM``."""

    index: int
    base: From
    instructions: tuple[Instruction, ...]

    @property
    def name(self) -> str | None:
        return self.base.name


@dataclass(frozen=True, slots=True)
class Dockerfile:
    file: str
    escape: str
    directives: tuple[tuple[str, str], ...]
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    # (location, text) of every instruction, continuations joined, as written: what
    # progress output and history "created_by" show.
    originals: tuple[tuple[Location, str], ...] = ()

    @property
    def syntax(self) -> str | None:
        return dict(self.directives).get("syntax")

    def original(self, node: Instruction) -> str:
        """The instruction's text as written (``RUN apt-get update``), continuations
        joined; empty for nodes that did not come from this file."""
        for location, text in self.originals:
            if location == node.location:
                return text
        return ""

    def stage(self, name_or_index: str) -> Stage | None:
        """The stage called ``name_or_index`` (case-insensitive) or with that index."""
        wanted = name_or_index.lower()
        for stage in self.stages:
            if stage.name is not None and stage.name.lower() == wanted:
                return stage
        if name_or_index.isascii() and name_or_index.isdigit():
            index = int(name_or_index)
            return self.stages[index] if index < len(self.stages) else None
        return None
