"""Build the stages of a :class:`~lamina.builder.plan.Plan` into an image.

Each stage starts from its base (a local image, ``scratch``, or a stage built before),
with the base's config; its ONBUILD triggers run first. Metadata instructions change
the config and add an ``empty_layer`` history entry (:mod:`lamina.dockerfile.config_changes`);
file instructions (RUN, COPY, ADD, and the mkdir of WORKDIR) are *steps*
(:mod:`lamina.builder.steps`): each has a content key (:mod:`lamina.builder.cache`); a hit
appends the recorded layer without touching a file; a miss runs the step on an overlay
snapshot (:class:`~lamina.builder.sandbox.workbench.Workbench`) and records what it made. A step
that changed nothing gets an ``empty_layer`` history entry and no layer (as BuildKit's
exporter). The target's layers, config and history become an OCI image tagged with
every name asked for.

Stages run in dependency order; stages that need neither the other run at once in
threads (``BuildOptions.jobs``). The whole build holds a store lease, so ``lamina
prune`` (gc) waits for it instead of sweeping layers the build is about to name.

Times: with ``SOURCE_DATE_EPOCH`` every ``created`` is the epoch (and layer mtimes are
clamped to it), so two builds of one context on different days give the same digest.
Without it a layer's history time is when the layer was first made (kept in its cache
record) and the image's is the newest of those, so a fully cached rebuild gives the
same image ID too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lamina.builder.api import BuildOptions, BuildResult, Event
from lamina.builder.cache import BuildCache, CacheRecord, cache_key
from lamina.builder.plan import Plan, StagePlan
from lamina.builder.sandbox.workbench import Workbench, oci_layer
from lamina.dockerfile.config_changes import apply
from lamina.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Instruction,
    ParseError,
    Run,
    Workdir,
)
from lamina.dockerfile.scope import StageScope
from lamina.dockerfile.words import expand_at
from lamina.errors import NotFound
from lamina.oci.config import History, ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform
from lamina.store.api import Store

if TYPE_CHECKING:
    from lamina.builder.steps import Steps

COMMENT = "buildkit.dockerfile.v0"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FILE_STEPS = (Run, Copy, Add, Workdir)

EventSink = Callable[[Event], None]


@dataclass(slots=True)
class StageState:
    """A stage in progress (or done): its config, layers and current cache key."""

    plan: StagePlan
    config: ImageConfig
    layers: list[Descriptor]
    key: str
    scope: StageScope
    layer_times: list[str] = field(default_factory=list)
    cmd_set: bool = False

    @property
    def label(self) -> str:
        return self.plan.label


class Builder:
    """One build; not reusable. ``on_event`` receives progress (see :mod:`.api`)."""

    def __init__(self, store: Store, options: BuildOptions, on_event: EventSink) -> None:
        self.store = store
        self.options = options
        self.emit = on_event
        self.cache = BuildCache(store.root)
        self.bench = Workbench(
            store,
            compression=options.compression,
            source_date_epoch=options.source_date_epoch,
            runtime=options.runtime,
        )
        self.states: dict[int, StageState] = {}
        self._vertex = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.failed_vertex = 0
        self.steps = 0
        self.cached = 0
        self._multi = False

    # ------------------------------------------------------------------ progress

    @property
    def current_vertex(self) -> int:
        """The vertex this thread started last (the step its RUN output belongs to)."""
        vertex: int = getattr(self._local, "vertex", 0)
        return vertex

    def start(self, name: str) -> tuple[int, float]:
        with self._lock:
            self._vertex += 1
            vertex = self._vertex
            self.emit(Event("start", vertex, name=name))
        self._local.vertex = vertex
        return vertex, time.monotonic()

    def done(self, vertex: int, started: float) -> None:
        self.emit(Event("done", vertex, seconds=time.monotonic() - started))

    # ------------------------------------------------------------------ the build

    def build(self, plan: Plan) -> BuildResult:
        from lamina.builder.steps import Steps

        self._multi = len(plan.dockerfile.stages) > 1
        for name in plan.unused_args:
            self.emit(Event("warning", 0, text=f"build-arg {name!r} was not consumed by any ARG"))
        with self.store.lease():
            self.bench.remove_stale()
            steps = Steps(self, plan)
            try:
                if self.options.jobs > 1 and _has_parallel_stages(plan):
                    self._parallel(plan, steps)
                else:
                    for stage_plan in plan.stages:
                        self._stage(plan, stage_plan, steps)
            finally:
                steps.close()
            return self._export(self.states[plan.target])

    def _parallel(self, plan: Plan, steps: Steps) -> None:
        """Stages whose needs are built run at once, up to ``options.jobs``; the first
        failure stops new stages and is raised once the running ones end. Ctrl-C kills
        the running steps' containers (runc gets no signal from a worker thread)."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        pending = list(plan.stages)
        built: set[int] = set()
        running: dict[Future[None], StagePlan] = {}
        error: BaseException | None = None
        with ThreadPoolExecutor(self.options.jobs, thread_name_prefix="stage") as pool:
            try:
                while pending or running:
                    ready = [sp for sp in pending if all(n in built for n in sp.needs)]
                    for sp in ready[: self.options.jobs - len(running)] if error is None else []:
                        pending.remove(sp)
                        running[pool.submit(self._stage, plan, sp, steps)] = sp
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        sp = running.pop(future)
                        exc = future.exception()
                        if exc is None:
                            built.add(sp.index)
                        elif error is None:
                            error = exc
            except BaseException:
                self.bench.abort()
                raise
        if error is not None:
            raise error

    def _base(self, plan: Plan, sp: StagePlan) -> StageState:
        df = plan.dockerfile
        globals_ = dict(plan.globals)
        if sp.base.stage is not None:
            parent = self.states[sp.base.stage]
            scope = StageScope(
                self.options.build_args,
                globals_,
                env=parent.config.config.env_dict(),
                escape=df.escape,
                inherited_args=parent.scope.args,
            )
            return StageState(
                sp,
                parent.config,
                list(parent.layers),
                parent.key,
                scope,
                list(parent.layer_times),
            )
        if sp.base.image is not None:
            from lamina.image.images import resolve

            try:
                image = resolve(self.store, sp.base.image)
            except NotFound as exc:
                raise ParseError(
                    sp.stage.base.location,
                    f"FROM {sp.base.image}: no such local image",
                    hint="make one with `lamina bootstrap busybox -t NAME` or `lamina pull`",
                ) from exc
            config = image.config
            layers = [oci_layer(d) for d in image.manifest.layers]
            key = cache_key("", "image", str(image.id))
        else:
            config = ImageConfig.new(Platform.host())
            layers, key = [], cache_key("", "scratch")
        if not any(item.startswith("PATH=") for item in config.config.env):
            # BuildKit and buildah give an image without PATH the default one.
            config = config.with_config(config.config.with_env("PATH", DEFAULT_PATH))
        scope = StageScope(
            self.options.build_args, globals_, env=config.config.env_dict(), escape=df.escape
        )
        return StageState(sp, config, layers, key, scope)

    def _stage(self, plan: Plan, sp: StagePlan, steps: Steps) -> None:
        df = plan.dockerfile
        instructions = list(sp.stage.instructions)
        total = 1 + sum(isinstance(n, FILE_STEPS) for n in instructions)
        prefix = f"{sp.label} " if self._multi else ""
        base = str(sp.base)
        if sp.base.stage is not None:
            base = self.states[sp.base.stage].label
        vertex, started = self.start(f"[{prefix}1/{total}] FROM {base}")
        try:
            st = self._base(plan, sp)
        except BaseException:
            with self._lock:
                self.failed_vertex = self.failed_vertex or vertex
            raise
        triggers = st.config.config.on_build
        if triggers:
            # The base's ONBUILD triggers run first and are consumed (Dockerfile
            # reference, ONBUILD): the new image does not inherit them.
            from lamina.dockerfile.parser import parse

            parsed = parse("FROM scratch\n" + "\n".join(triggers), "ONBUILD")
            instructions = [*parsed.stages[0].instructions, *instructions]
            total += sum(isinstance(n, FILE_STEPS) for n in parsed.stages[0].instructions)
            st.config = st.config.with_config(replace(st.config.config, on_build=()))
        self.done(vertex, started)
        position = 1
        for node in instructions:
            if isinstance(node, FILE_STEPS):
                position += 1
                name = f"[{prefix}{position}/{total}] {df.original(node) or _keyword(node)}"
                self._file_step(st, node, name, steps)
            else:
                self._metadata(st, node, df.escape)
        self.states[sp.index] = st

    def _metadata(self, st: StageState, node: Instruction, escape: str) -> None:
        if isinstance(node, Arg):
            # BuildKit records ARG in the history too (defaults expanded, never the
            # --build-arg value: that could be a secret).
            variables = st.scope.variables()
            decls = [
                d.name
                if d.default is None
                else f"{d.name}={expand_at(node.location, d.default, variables, escape=escape)}"
                for d in node.args
            ]
            st.scope.apply(node)
            st.config = st.config.with_history(
                History(
                    created=None,
                    created_by="ARG " + " ".join(decls),
                    comment=COMMENT,
                    empty_layer=True,
                )
            )
            return
        image, created_by = apply(node, st.config, st.scope, escape=escape, cmd_set=st.cmd_set)
        st.cmd_set = st.cmd_set or isinstance(node, Cmd)
        st.config = image.with_history(
            History(created=None, created_by=created_by, comment=COMMENT, empty_layer=True)
        )

    def _file_step(self, st: StageState, node: Instruction, name: str, steps: Steps) -> None:
        if isinstance(node, Workdir):
            st.config, created_by = apply(node, st.config, st.scope, escape=steps.df.escape)
            if st.config.config.working_dir == "/":
                st.config = st.config.with_history(
                    History(created=None, created_by=created_by, comment=COMMENT, empty_layer=True)
                )
                vertex, _ = self.start(name)
                self.emit(Event("cached", vertex))
                return
        vertex, started = self.start(name)
        try:
            prepared = steps.prepare(st, node)
            record = None if self.options.no_cache else self.cache.get(prepared.key, self.store)
            with self._lock:
                self.steps += 1
                self.cached += record is not None
            if record is not None:
                self.emit(Event("cached", vertex))
            else:
                record = prepared.run(vertex, started)
                self.cache.put(prepared.key, record)
                self.done(vertex, started)
        except BaseException:
            with self._lock:
                self.failed_vertex = self.failed_vertex or vertex
            raise
        self._append(st, record, prepared.created_by)
        st.key = prepared.key

    def _append(self, st: StageState, record: CacheRecord, created_by: str) -> None:
        created = record.created
        if self.options.source_date_epoch is not None:
            created = self.bench.now()
        if record.layer is None or record.diff_id is None:
            st.config = st.config.with_history(
                History(created=created, created_by=created_by, comment=COMMENT, empty_layer=True)
            )
            return
        st.layers.append(oci_layer(record.layer))
        st.layer_times.append(created)
        st.config = st.config.with_layer(
            record.diff_id, History(created=created, created_by=created_by, comment=COMMENT)
        )

    # ------------------------------------------------------------------ export

    def _created(self, st: StageState) -> str:
        if self.options.source_date_epoch is not None:
            return self.bench.now()
        if st.layer_times:
            return max(st.layer_times)
        return self.bench.now()

    def _export(self, st: StageState) -> BuildResult:
        from lamina.image.images import normalize

        vertex, started = self.start("exporting to image")
        created = self._created(st)
        history = tuple(
            h if h.created is not None else replace(h, created=created) for h in st.config.history
        )
        config = replace(st.config, created=created, history=history)
        if self.options.labels:
            labels = {**config.config.labels, **self.options.labels}
            config = config.with_config(replace(config.config, labels=labels))
        names = tuple(dict.fromkeys(normalize(t) for t in self.options.tags))
        manifest, image_id = self._store_image(st.layers, config)
        self.emit(Event("info", vertex, text=f"writing image {image_id}"))
        for name in names:
            self.store.set_ref(name, manifest)
            self.emit(Event("info", vertex, text=f"naming to {name}"))
        if not names:
            from lamina.image.images import dangling_name

            # Kept under the dangling name so that gc spares it and its ID resolves.
            self.store.set_ref(dangling_name(manifest.digest), manifest)
        self.done(vertex, started)
        return BuildResult(manifest, image_id, names, config, self.steps, self.cached)

    def _store_image(
        self, layers: list[Descriptor], config: ImageConfig
    ) -> tuple[Descriptor, Digest]:
        """Config and manifest into the store; as ``lamina.image.importer.build_image``
        but without importing the layer writer (start-up time of a cached build), and
        without re-ingesting (and fsyncing) documents the store has already."""
        from lamina.oci import mediatypes as mt
        from lamina.oci.canonical import check_document_size
        from lamina.oci.manifest import Manifest

        def put(data: bytes) -> Digest:
            digest = Digest.from_bytes(data)
            if not self.store.has(digest):
                self.store.put_bytes(data, digest)
            return digest

        config_bytes = config.to_bytes()
        # every entry to the store caps configs (README "Limits"), the build too
        check_document_size("config", len(config_bytes), "the built image")
        config_digest = put(config_bytes)
        manifest = Manifest(
            config=Descriptor(mt.OCI_CONFIG, config_digest, len(config_bytes)),
            layers=tuple(layers),
        )
        data = manifest.to_bytes()
        return Descriptor(mt.OCI_MANIFEST, put(data), len(data)), config_digest


def _has_parallel_stages(plan: Plan) -> bool:
    """Whether some two planned stages need neither the other (directly or not)."""
    below: dict[int, set[int]] = {}
    for sp in plan.stages:  # dependencies come first in the plan
        below[sp.index] = set(sp.needs).union(*(below[n] for n in sp.needs))
    indexes = list(below)
    return any(
        a not in below[b] and b not in below[a]
        for i, a in enumerate(indexes)
        for b in indexes[i + 1 :]
    )


def _keyword(node: Instruction) -> str:
    return type(node).__name__.upper()
