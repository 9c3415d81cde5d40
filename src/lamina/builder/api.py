"""Contracts of the build executor: what a build is asked, what it reports, what it makes.

Lifecycle of one ``lamina build``::

    df = parse(text, file)                                  # lamina.dockerfile.parser
    p = plan(df, build_args, target, image_exists=...)     # lamina.builder.plan (pure)
    result = Builder(store, options, on_event).build(p)    # lamina.builder.executor

The builder reports progress as :class:`Event` values, in order: a ``start`` for each
vertex (a ``FROM``, a file step, the export), then its ``log`` chunks (these come from
the thread that reads the step's output: the sink must be thread-safe), then one of
``cached``, ``done`` or ``error``. Independent stages are built at once (up to
``BuildOptions.jobs`` threads): the sink must be thread-safe. Metadata instructions
(ENV, LABEL, CMD...) are not vertices: they only change the config (BuildKit shows
them the same way).

Invariants: the store is only ever added to (layers, configs, manifests, then refs
last); cache records are written after their layer blob is in the store; a build
killed at any point leaves whole blobs, whole records, and a workspace plus an active
snapshot that the next build removes (see :mod:`lamina.builder.sandbox.runner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lamina.errors import InvalidArgument, ToolError
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest

_EMPTY: Mapping[str, str] = MappingProxyType({})
NETWORKS = ("bridge", "host", "none")


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """``context``: the build context directory; ``dockerfile``: the file's path (for
    ``NAME.dockerignore``); ``secrets``: id -> host file for ``RUN --mount=type=secret``;
    ``network``: what ``RUN`` gets by default (``bridge``: a private namespace on the
    default network, NAT out, as ``lamina run``; ``host``; ``none``; ``RUN
    --network=none|host`` overrides it for a step);
    ``source_date_epoch``: clamp file mtimes and set every time in the config to it."""

    context: str
    dockerfile: str
    build_args: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    target: str | None = None
    tags: tuple[str, ...] = ()
    no_cache: bool = False
    secrets: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    network: str = "bridge"
    source_date_epoch: int | None = None
    compression: str = "gzip"
    runtime: str = "runc"
    jobs: int = 2  # stages built at once when the graph allows (buildah's --jobs)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise InvalidArgument(f"--jobs must be at least 1, not {self.jobs}")
        if self.network not in NETWORKS:
            raise InvalidArgument(
                f"unknown network {self.network!r}", hint="use --network bridge, host or none"
            )
        for name in ("build_args", "secrets", "labels"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "tags", tuple(self.tags))


@dataclass(frozen=True, slots=True)
class Event:
    """One progress event. ``kind``: ``start`` (``name`` is the vertex's title),
    ``log`` (``text``: one chunk of the step's output, ``seconds`` since its start),
    ``cached``, ``done`` (``seconds``: its duration), ``error`` (``text``: why),
    ``info`` (``text``: a line about the vertex, such as ``writing image sha256:…``),
    ``warning`` (``vertex`` 0)."""

    kind: str
    vertex: int
    name: str = ""
    text: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "vertex": self.vertex}
        if self.name:
            out["name"] = self.name
        if self.text:
            out["text"] = self.text
        if self.kind in ("log", "done"):
            out["seconds"] = round(self.seconds, 3)
        return out


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The target's image: manifest descriptor, ID (config digest), names and config."""

    manifest: Descriptor
    image_id: Digest
    names: tuple[str, ...]
    config: ImageConfig
    steps: int = 0
    cached: int = 0


class StepFailed(ToolError):
    """A RUN step's process exited non-zero; ``tail`` holds its last output lines."""

    def __init__(
        self, message: str, *, exit_code: int, tail: tuple[str, ...], step: str, hint: str | None
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code_of_step = exit_code
        self.tail = tail
        self.step = step
