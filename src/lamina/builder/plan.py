"""The stages of a Dockerfile as a graph, and the order to build the ones a target needs.

Pure: a parsed :class:`~lamina.dockerfile.instructions.Dockerfile` and the build arguments
in, a :class:`Plan` out. Edges (BuildKit's dockerfile2llb rules):

- ``FROM <name>`` names an *earlier* stage (case-insensitive); any other name is an
  image, ``scratch`` is the empty image. The name is expanded with the global ARGs.
- ``COPY --from=<name|index>`` and ``RUN --mount=...,from=<name|index>`` name a stage
  anywhere in the file (a forward reference is allowed, a cycle is an error); anything
  else is an image. ``--from`` is expanded with the global ARGs too.
- Only the stages the target reaches are built; their order puts every stage after
  the stages it needs (ties keep file order).

Errors are :class:`~lamina.dockerfile.instructions.ParseError` at the instruction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.dockerfile.instructions import (
    Arg,
    Copy,
    Dockerfile,
    Location,
    OnBuild,
    ParseError,
    Run,
    Stage,
)
from lamina.dockerfile.scope import PREDEFINED_ARGS, global_scope
from lamina.dockerfile.words import expand_at
from lamina.errors import InvalidArgument

SCRATCH = "scratch"
# Build arguments BuildKit reads itself: never reported as unused.
BUILTIN_ARGS = frozenset({"SOURCE_DATE_EPOCH", "BUILDKIT_INLINE_CACHE", "BUILDKIT_SYNTAX"})


def automatic_args(os_: str, architecture: str, variant: str = "") -> dict[str, str]:
    """BuildKit's automatic platform ARGs (Dockerfile reference, "Automatic platform
    ARGs in the global scope"): the target is the build platform here."""
    platform = f"{os_}/{architecture}" + (f"/{variant}" if variant else "")
    out: dict[str, str] = {}
    for prefix in ("TARGET", "BUILD"):
        out |= {
            f"{prefix}PLATFORM": platform,
            f"{prefix}OS": os_,
            f"{prefix}ARCH": architecture,
            f"{prefix}VARIANT": variant,
        }
    return out


@dataclass(frozen=True, slots=True)
class Source:
    """What a ``FROM`` / ``--from`` names: a stage (``stage`` set), an image (``image``
    set, a reference as written after expansion) or nothing (scratch)."""

    stage: int | None = None
    image: str | None = None

    @property
    def scratch(self) -> bool:
        return self.stage is None and self.image is None

    def __str__(self) -> str:
        if self.stage is not None:
            return f"stage {self.stage}"
        return self.image if self.image is not None else SCRATCH


@dataclass(frozen=True, slots=True)
class StagePlan:
    """One stage to build: its base, the stages it needs, the images it copies from."""

    stage: Stage
    base: Source
    needs: tuple[int, ...] = ()
    images: tuple[str, ...] = ()

    @property
    def index(self) -> int:
        return self.stage.index

    @property
    def label(self) -> str:
        """How progress names it: its name, else ``stage-N`` (as BuildKit)."""
        return self.stage.name or f"stage-{self.stage.index}"


@dataclass(frozen=True, slots=True)
class Plan:
    dockerfile: Dockerfile
    target: int
    stages: tuple[StagePlan, ...]  # in build order; the target is last
    globals: Mapping[str, str] = field(default_factory=dict)
    unused_args: tuple[str, ...] = ()

    def stage(self, index: int) -> StagePlan:
        for planned in self.stages:
            if planned.index == index:
                return planned
        raise KeyError(index)


def find_stage(dockerfile: Dockerfile, name: str, *, before: int | None = None) -> int | None:
    """The index of the stage ``name`` refers to (a name, or an index for ``--from``);
    with ``before``, only stages defined earlier count (``FROM`` semantics)."""
    wanted = name.lower()
    limit = len(dockerfile.stages) if before is None else before
    for stage in dockerfile.stages[:limit]:
        if stage.name is not None and stage.name.lower() == wanted:
            return stage.index
    if before is None and name.isascii() and name.isdigit():
        index = int(name)
        if index < len(dockerfile.stages):
            return index
    return None


def from_source(
    dockerfile: Dockerfile,
    location: Location,
    raw: str,
    globals_: Mapping[str, str],
    what: str,
) -> Source:
    name = expand_at(location, raw, globals_, escape=dockerfile.escape)
    if not name:
        raise ParseError(location, f"{what}: empty stage or image name")
    index = find_stage(dockerfile, name)
    if index is not None:
        return Source(stage=index)
    if name.isascii() and name.isdigit():
        raise ParseError(
            location,
            f"{what}={name}: there is no stage {name} (the file has {len(dockerfile.stages)})",
            hint="stage indexes count FROM lines from 0",
        )
    if name.lower() == SCRATCH:
        return Source()
    return Source(image=name)


def _references(
    dockerfile: Dockerfile, stage: Stage, globals_: Mapping[str, str]
) -> list[tuple[Location, Source]]:
    """Every ``--from`` of the stage's COPY and RUN --mount (ONBUILD bodies excluded:
    they run in the images built on this one)."""
    out: list[tuple[Location, Source]] = []
    for node in stage.instructions:
        if isinstance(node, OnBuild):
            continue
        if isinstance(node, Copy) and node.from_ is not None:
            out.append(
                (
                    node.location,
                    from_source(dockerfile, node.location, node.from_, globals_, "COPY --from"),
                )
            )
        elif isinstance(node, Run):
            for mount in node.mounts:
                source = mount.get("from")
                if source is not None:
                    ref = from_source(dockerfile, node.location, source, globals_, "--mount from")
                    out.append((node.location, ref))
    return out


def stage_base(dockerfile: Dockerfile, stage: Stage, globals_: Mapping[str, str]) -> Source:
    name = expand_at(stage.base.location, stage.base.image, globals_, escape=dockerfile.escape)
    if not name:
        raise ParseError(
            stage.base.location,
            f"FROM {stage.base.image}: the image name expands to nothing",
            hint="pass the ARG it uses with --build-arg, or give it a default",
        )
    index = find_stage(dockerfile, name, before=stage.index)
    if index is not None:
        return Source(stage=index)
    if name.lower() == SCRATCH:
        return Source()
    return Source(image=name)


def plan(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str] = {},
    target: str | None = None,
    *,
    automatic: Mapping[str, str] = {},
    image_exists: Callable[[str], bool] | None = None,
) -> Plan:
    """The stages to build for ``target`` (default: the last stage), in order.

    ``image_exists``, when given, is asked about every image a ``--from`` names, so
    that a misspelt stage name is reported at its line instead of as a missing image
    later.
    """
    globals_ = global_scope(dockerfile, build_args, automatic)
    if target is None:
        target_index = dockerfile.stages[-1].index
    else:
        found = find_stage(dockerfile, target)
        if found is None or (target.isdigit() and dockerfile.stages[found].name is not None):
            names = [s.name for s in dockerfile.stages if s.name]
            raise InvalidArgument(
                f"target stage {target!r} could not be found in {dockerfile.file}",
                hint="stages: " + (", ".join(names) if names else "none are named (FROM x AS n)"),
            )
        target_index = found

    planned: dict[int, StagePlan] = {}
    edges: dict[int, list[tuple[int, Location]]] = {}

    def visit(index: int) -> None:
        if index in planned:
            return
        stage = dockerfile.stages[index]
        base = stage_base(dockerfile, stage, globals_)
        needs: list[tuple[int, Location]] = []
        if base.stage is not None:
            needs.append((base.stage, stage.base.location))
        images: list[str] = []
        for location, ref in _references(dockerfile, stage, globals_):
            if ref.stage is not None:
                needs.append((ref.stage, location))
            elif ref.image is not None:
                if image_exists is not None and not image_exists(ref.image):
                    raise ParseError(
                        location,
                        f"--from={ref.image}: no stage of that name, and no such local image",
                        hint="name a stage (FROM ... AS NAME) or an image in `lamina images`",
                    )
                images.append(ref.image)
        deps = tuple(dict.fromkeys(n for n, _ in needs))
        planned[index] = StagePlan(stage, base, deps, tuple(dict.fromkeys(images)))
        edges[index] = needs
        for dep, _ in needs:
            visit(dep)

    visit(target_index)
    order = _order(dockerfile, target_index, edges)
    used: set[str] = set()
    for arg in dockerfile.global_args:
        used.update(d.name for d in arg.args)
    for index in order:
        used |= all_args_used(dockerfile.stages[index])
    known = used | PREDEFINED_ARGS | BUILTIN_ARGS | set(automatic)
    unused = tuple(sorted(k for k in build_args if k not in known))
    return Plan(
        dockerfile,
        target_index,
        tuple(planned[i] for i in order),
        globals_,
        unused,
    )


def _order(
    dockerfile: Dockerfile, target: int, edges: Mapping[int, list[tuple[int, Location]]]
) -> list[int]:
    """Depth-first post-order from the target: dependencies first; a back edge is a
    cycle (BuildKit: "circular dependency detected on stage")."""
    order: list[int] = []
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def walk(index: int) -> None:
        state[index] = 1
        for dep, location in sorted(edges[index], key=lambda e: e[0]):
            if state.get(dep) == 1:
                name = dockerfile.stages[dep].name or str(dep)
                raise ParseError(
                    location,
                    f"circular dependency detected on stage: {name}",
                    hint="a stage cannot copy from itself or from a stage that needs it",
                )
            if state.get(dep) is None:
                walk(dep)
        state[index] = 2
        order.append(index)

    walk(target)
    return order


def all_args_used(stage: Stage) -> set[str]:
    """Names the stage declares with ARG (used to report unused --build-arg)."""
    return {d.name for node in stage.instructions if isinstance(node, Arg) for d in node.args}
