"""File steps: RUN, COPY, ADD and WORKDIR's mkdir, each as a cache key plus the work.

:meth:`Steps.prepare` expands the instruction with the stage's ARGs and ENV, computes its
cache key (:mod:`lamina.builder.cache`: for COPY/ADD from the context this hashes the
selected files, the only file work a fully cached build does) and returns a
:class:`Prepared` whose ``run`` does the work on a snapshot when the cache misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.builder.api import Event, StepFailed
from lamina.builder.cache import CacheRecord, cache_key
from lamina.builder.plan import Plan, Source, from_source
from lamina.dockerfile.config_changes import shell_of
from lamina.dockerfile.instructions import (
    Add,
    Copy,
    ExecForm,
    Instruction,
    ParseError,
    Run,
    ShellForm,
    Workdir,
    heredoc_source,
)
from lamina.dockerfile.words import expand_at, expand_heredoc
from lamina.errors import LaminaError, NotFound, Unsupported
from lamina.stateroot import BUILD_CONTEXT_CACHE, BUILD_FROM_CACHE, BUILD_TMP

if TYPE_CHECKING:
    from lamina.builder.executor import Builder, StageState
    from lamina.builder.files.context import Source as Selected
    from lamina.builder.files.ignore import IgnoreMatcher
    from lamina.builder.sandbox.mounts import MountPlan
    from lamina.builder.sandbox.runner import Workspace
    from lamina.image.images import Image
    from lamina.oci.config import ImageConfig
    from lamina.oci.descriptor import Descriptor


@dataclass(frozen=True, slots=True)
class Prepared:
    key: str
    created_by: str
    run: Callable[[int, float], CacheRecord]


@dataclass(frozen=True, slots=True)
class Chain:
    """A stage's or image's layers and config, to mount with ``Workbench.view``."""

    layers: tuple[Descriptor, ...]
    config: ImageConfig
    key: str


@dataclass(frozen=True, slots=True)
class _CopyArgs:
    """COPY/ADD flags after expansion (``lamina.builder.files.copy.CopyOptions`` is made from
    them only when the step runs: its module pulls in the HTTP client)."""

    dest: str
    workdir: str
    chown: str | None
    chmod: str | None
    parents: bool
    excludes: tuple[str, ...]
    instruction: str


def relocate(exc: LaminaError, where: object) -> LaminaError:
    """The same error with the instruction's position in front."""
    if isinstance(exc, (ParseError, StepFailed)):
        return exc
    return type(exc)(f"{where}: {exc.message}", hint=exc.hint)


class Steps:
    def __init__(self, builder: Builder, plan: Plan) -> None:
        self.b = builder
        self.plan = plan
        self.df = plan.dockerfile
        self.options = builder.options
        self.context = os.path.abspath(builder.options.context)
        self.root = builder.store.root
        self._ignore: IgnoreMatcher | None = None
        self._images: dict[str, Image] = {}
        self._tmp: list[str] = []

    def close(self) -> None:
        for path in self._tmp:
            shutil.rmtree(path, ignore_errors=True)

    def tempdir(self) -> str:
        from lamina.sysinfo import owner_label

        base = os.path.join(self.root, BUILD_TMP)
        os.makedirs(base, mode=0o700, exist_ok=True)
        # named by its owner, so that the next build removes it if this one is killed
        path = os.path.join(base, f"{owner_label()}.{os.urandom(8).hex()}")
        os.mkdir(path, 0o700)
        self._tmp.append(path)
        return path

    @property
    def ignore(self) -> IgnoreMatcher:
        if self._ignore is None:
            from lamina.builder.files.ignore import load_ignore

            self._ignore = load_ignore(self.context, self.options.dockerfile)
        return self._ignore

    def context_checksum(self, sources: list[Selected]) -> str:
        from lamina.builder.files.context import checksum

        return checksum(
            self.context, sources, cache_dir=os.path.join(self.root, BUILD_CONTEXT_CACHE)
        )

    def from_checksum(self, chain: Chain, words: list[str], args: _CopyArgs) -> str:
        """The content checksum (owners and hardlinks included) of what a ``COPY --from``
        selects in its source, as BuildKit keys it: a stage rebuilt with the same output
        keeps the COPY cached. A chain's snapshot never changes (it is named by its
        ChainID), so the checksum is remembered per (ChainID, selection) and a cached
        build mounts nothing."""
        if not chain.layers:
            return chain.key  # scratch: nothing to select
        from lamina.atomic import write_atomic
        from lamina.builder.files.context import checksum, select
        from lamina.oci.ids import chain_ids

        top = str(chain_ids(chain.config.diff_ids)[-1])
        what = json.dumps(["v1", top, words, list(args.excludes), args.parents])
        memo = os.path.join(self.root, BUILD_FROM_CACHE, hashlib.sha256(what.encode()).hexdigest())
        try:
            with open(memo, encoding="ascii") as fh:
                known = fh.read(100)
            if known.startswith("sha256:") and len(known) == 71:
                return known
        except (OSError, ValueError):
            pass  # not computed yet, or damaged: compute again
        with self.b.bench.view(chain.layers, chain.config) as view:
            chosen = select(
                view,
                words,
                excludes=args.excludes,
                parents=args.parents,
                context=False,
                instruction=args.instruction,
            )
            value = checksum(view, chosen, owners=True)
        try:
            os.makedirs(os.path.dirname(memo), mode=0o700, exist_ok=True)
            write_atomic(memo, value.encode())
        except OSError:
            pass  # a memo that cannot be written only costs a mount next time
        return value

    def chain(self, source: Source, node: Instruction) -> Chain:
        """The layers of the stage or image a ``--from`` names."""
        from lamina.builder.sandbox.workbench import oci_layer

        if source.stage is not None:
            st = self.b.states.get(source.stage)
            if st is None:
                raise ParseError(node.location, f"stage {source.stage} is not built yet")
            return Chain(tuple(st.layers), st.config, st.key)
        if source.image is None:
            from lamina.oci.config import ImageConfig
            from lamina.oci.platform import Platform

            return Chain((), ImageConfig.new(Platform.host()), cache_key("", "scratch"))
        image = self._images.get(source.image)
        if image is None:
            from lamina.image.images import resolve

            try:
                image = resolve(self.b.store, source.image)
            except NotFound as exc:
                raise ParseError(
                    node.location,
                    f"--from={source.image}: no stage of that name, and no such local image",
                    hint="name a stage (FROM ... AS NAME) or an image in `lamina images`",
                ) from exc
            self._images[source.image] = image
        layers = tuple(oci_layer(d) for d in image.manifest.layers)
        return Chain(layers, image.config, cache_key("", "image", str(image.id)))

    def from_chain(self, node: Instruction, raw: str, what: str) -> Chain:
        source = from_source(self.df, node.location, raw, self.plan.globals, what)
        return self.chain(source, node)

    # ------------------------------------------------------------------ dispatch

    def prepare(self, st: StageState, node: Instruction) -> Prepared:
        try:
            if isinstance(node, Run):
                return self._run(st, node)
            if isinstance(node, (Copy, Add)):
                return self._copy(st, node)
            if isinstance(node, Workdir):
                return self._workdir(st, node)
        except LaminaError as exc:
            raise relocate(exc, node.location) from exc
        raise Unsupported(f"{type(node).__name__} is not a file step")

    def _step(
        self,
        st: StageState,
        node: Instruction,
        work: Callable[[Workspace, str], Callable[[], None] | None],
    ) -> Callable[[int, float], CacheRecord]:
        layers, config = list(st.layers), st.config

        def run(vertex: int, started: float) -> CacheRecord:
            try:
                return self.b.bench.step(layers, config, work)
            except LaminaError as exc:
                raise relocate(exc, node.location) from exc

        return run

    # ------------------------------------------------------------------ WORKDIR

    def _workdir(self, st: StageState, node: Workdir) -> Prepared:
        path = st.config.config.working_dir
        user = st.config.config.user

        def work(ws: Workspace, upper: str) -> None:
            make_workdir(ws.rootfs, path, user)

        key = cache_key(st.key, "WORKDIR", path, user, self.options.source_date_epoch)
        return Prepared(key, f"WORKDIR {path}", self._step(st, node, work))

    # ------------------------------------------------------------------ COPY / ADD

    def _copy(self, st: StageState, node: Copy | Add) -> Prepared:
        keyword = "COPY" if isinstance(node, Copy) else "ADD"
        variables = st.scope.variables()
        esc = self.df.escape

        def exp(word: str) -> str:
            return expand_at(node.location, word, variables, escape=esc)

        options = _CopyArgs(
            dest=exp(node.dest),
            workdir=st.config.config.working_dir or "/",
            chown=exp(node.chown) if node.chown else None,
            chmod=exp(node.chmod) if node.chmod else None,
            parents=node.parents,
            excludes=tuple(exp(e) for e in node.exclude),
            instruction=keyword,
        )
        heredocs = [heredoc_source(w, node.heredocs) for w in node.sources]
        words = [exp(w) if h is None else w for w, h in zip(node.sources, heredocs, strict=True)]
        urls = isinstance(node, Add) and any(is_url(w) for w in words)
        from_ = node.from_ if isinstance(node, Copy) else None
        flags = {
            "dest": options.dest,
            "workdir": options.workdir,
            "chown": options.chown,
            "chmod": options.chmod,
            "parents": options.parents,
            "excludes": list(options.excludes),
            "link": node.link,
            "epoch": self.options.source_date_epoch,
        }
        if isinstance(node, Add):
            flags |= {"unpack": node.unpack, "checksum": node.checksum}
        unpack = node.unpack if isinstance(node, Add) else False
        shown = " ".join(words)
        created_by = f"{keyword} {shown} {options.dest} # buildkit"
        src_root: str
        selected: list[Selected] | None = None
        chain: Chain | None = None
        if any(h is not None for h in heredocs) or urls:
            if from_ is not None or not all(
                h is not None or (urls and is_url(w)) for w, h in zip(words, heredocs, strict=True)
            ):
                raise Unsupported(
                    f"{keyword}: mixing heredocs or URLs with other sources",
                    hint="give them in separate instructions",
                )
            from lamina.builder.files.addurl import fetch_url, url_checksum

            src_root = self.tempdir()
            names: list[str] = []
            inputs: list[Any] = []
            for word, heredoc in zip(words, heredocs, strict=True):
                if heredoc is not None:
                    content = heredoc.content
                    if heredoc.expand:
                        content = expand_heredoc(content, variables, escape=esc)
                    with open(os.path.join(src_root, heredoc.name), "w", encoding="utf-8") as f:
                        f.write(content)
                    os.chmod(os.path.join(src_root, heredoc.name), 0o644)
                    names.append(heredoc.name)
                    inputs.append(["heredoc", heredoc.name, content])
                else:
                    path = fetch_url(
                        word,
                        src_root,
                        checksum=exp(node.checksum)
                        if isinstance(node, Add) and node.checksum
                        else None,
                    )
                    names.append(os.path.basename(path))
                    inputs.append(["url", word, url_checksum(path)])
                    if not (isinstance(node, Add) and node.unpack):
                        unpack = False  # a downloaded archive stays a file (reference, ADD)
            from lamina.builder.files.context import select

            selected = select(src_root, names, context=False, instruction=keyword)
            source_key: list[Any] = ["inline", inputs]
        elif from_ is not None:
            chain = self.from_chain(node, from_, "COPY --from")
            source_key = ["from", self.from_checksum(chain, words, options)]
            src_root = ""
        else:
            from lamina.builder.files.context import select

            src_root = self.context
            selected = select(
                self.context,
                words,
                ignore=self.ignore,
                excludes=options.excludes,
                parents=options.parents,
                instruction=keyword,
            )
            source_key = ["context", words, self.context_checksum(selected)]
        key = cache_key(st.key, keyword, flags, source_key)

        def put(root: str, sources: list[Selected], dest: str, chown: str | None) -> None:
            from lamina.builder.files.copy import CopyOptions, add_into, copy_into

            opts = CopyOptions(
                options.dest,
                options.workdir,
                chown,
                options.chmod,
                options.parents,
                options.excludes,
                options.instruction,
                # COPY --from keeps the source's owners (unless --chown) and hardlinks,
                # as BuildKit does; the context's files become 0:0
                preserve_owner=chain is not None,
                hardlinks=chain is not None,
            )
            if isinstance(node, Add):
                add_into(root, sources, dest, opts, unpack=unpack)
            else:
                copy_into(root, sources, dest, opts)

        def copy_to(dest: str, chown: str | None) -> None:
            if chain is None:
                assert selected is not None
                put(src_root, selected, dest, chown)
                return
            from lamina.builder.files.context import select

            with self.b.bench.view(chain.layers, chain.config) as view:
                chosen = select(
                    view,
                    words,
                    excludes=options.excludes,
                    parents=options.parents,
                    context=False,
                    instruction=keyword,
                )
                put(view, chosen, dest, chown)

        def work(ws: Workspace, upper: str) -> Callable[[], None] | None:
            if not node.link:
                copy_to(ws.rootfs, options.chown)
                return None
            # --link (BuildKit): the files are copied into an empty directory that becomes
            # the layer, independent of the layers below: nothing of the image is read
            # (a symlinked destination is not followed, an existing directory without a
            # trailing / is not copied into) and the parents are made in the layer. The
            # empty directory is this step's overlay upper dir, written once the overlay
            # is unmounted. Only --chown names are looked up in the image below.
            chown = options.chown
            if named_chown and chown:
                from lamina.builder.files.copy import resolve_chown

                uid, gid = resolve_chown(ws.rootfs, chown)
                chown = f"{uid}:{gid}"
            return lambda: copy_to(upper, chown)

        named_chown = bool(options.chown) and not all(
            p.isascii() and p.isdigit() for p in (options.chown or "").split(":")
        )
        run = self._step(st, node, work)
        if node.link:
            run = self._linked(run, flags, source_key, st.key if named_chown else "")
        return Prepared(key, created_by, run)

    def _linked(
        self,
        run: Callable[[int, float], CacheRecord],
        flags: dict[str, Any],
        source_key: list[Any],
        base: str,
    ) -> Callable[[int, float], CacheRecord]:
        """A ``--link`` layer does not depend on the layers below, so (as BuildKit) it is
        also recorded under a key without them: a changed base reuses it (unless --chown
        names a user, whose ids the base's /etc/passwd gives)."""
        link_key = cache_key(base, "LINK", flags, source_key)

        def linked(vertex: int, started: float) -> CacheRecord:
            cache = self.b.cache
            if not self.options.no_cache:
                record = cache.get(link_key, self.b.store)
                if record is not None and record.layer is not None:
                    return record
            record = run(vertex, started)
            cache.put(link_key, record)
            return record

        return linked

    # ------------------------------------------------------------------ RUN

    def _run(self, st: StageState, node: Run) -> Prepared:
        from lamina.builder.sandbox.mounts import plan_mounts
        from lamina.builder.sandbox.runner import Process, Stubs, run_process

        if node.security == "insecure":
            raise Unsupported("RUN --security=insecure", hint="lamina runs steps sandboxed only")
        if node.device:
            raise Unsupported("RUN --device")
        config = st.config.config
        command = node.command
        if isinstance(command, ExecForm):
            argv = command.argv
        else:
            argv = (*shell_of(config, st.config.os), _script(command, node))
        env = list(config.env)
        names = {item.partition("=")[0] for item in env}
        args = st.scope.args
        used = sorted((k, v) for k, v in args.items() if k not in names)
        env += [f"{k}={v}" for k, v in used]
        network = node.network if node.network in ("none", "host") else self.options.network
        mounts: list[MountPlan] = plan_mounts(self, st, node)
        key = cache_key(
            st.key,
            "RUN",
            list(argv),
            env,
            config.user,
            config.working_dir or "/",
            network,
            [m.key for m in mounts],
            self.options.source_date_epoch,
        )
        prefix = f"|{len(used)} " + " ".join(f"{k}={v}" for k, v in used) + " " if used else ""
        created_by = f"RUN {prefix}{' '.join(argv)} # buildkit"
        process = Process(argv, tuple(env), config.user, config.working_dir or "/", network)
        name = self.df.original(node) or "RUN"

        def work(ws: Workspace, upper: str) -> Callable[[], None]:
            vertex = self.b.current_vertex
            started = time.monotonic()

            def output(data: bytes) -> None:
                text = data.decode("utf-8", "replace")
                self.b.emit(Event("log", vertex, text=text, seconds=time.monotonic() - started))

            stubs = Stubs(ws.rootfs, upper)
            with ExitStack() as stack:
                spec_mounts = [m.resolve(stack) for m in mounts]
                outcome = run_process(
                    ws,
                    self.b.bench.runtime,
                    stubs,
                    process,
                    mounts=[m for m in spec_mounts if m is not None],
                    on_output=output,
                )
            if outcome.exit_code != 0:
                shown = " ".join(argv)
                why = outcome.error or f"exit code: {outcome.exit_code}"
                raise StepFailed(
                    f'{node.location}: process "{shown}" did not complete successfully: {why}',
                    exit_code=outcome.exit_code,
                    tail=outcome.tail,
                    step=name,
                    hint="the step's last output lines are above",
                )
            return stubs.prune_upper

        return Prepared(key, created_by, self._step(st, node, work))


def make_workdir(rootfs: str, path: str, user: str) -> None:
    """WORKDIR's mkdir -p inside ``rootfs``: the directories it makes belong to the
    stage's USER (BuildKit and buildah both do so), resolved in the root's passwd."""
    from lamina.layers import fsops
    from lamina.runtime.bundle.users import prepare_workdir, resolve_user

    parts = [p for p in path.split("/") if p]
    missing: list[str] = []
    if user:
        with fsops.Root(rootfs) as root:
            for i in range(len(parts)):
                try:
                    root.dir_fd("/".join(parts[: i + 1]), create=False)
                except NotFound:
                    missing = ["/".join(parts[: j + 1]) for j in range(i, len(parts))]
                    break
    prepare_workdir(rootfs, path)
    if not missing:
        return
    ids = resolve_user(rootfs, user)
    with fsops.Root(rootfs) as root:
        for rel in missing:
            parent, leaf = root.parent(rel, create=False)
            try:
                os.chown(leaf, ids.uid, ids.gid, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise fsops.os_error("chown", rel, exc) from exc


def is_url(word: str) -> bool:
    """An ADD source to download (as :func:`lamina.builder.files.addurl.is_url`, without
    importing the HTTP client: a COPY-only build does not need it)."""
    return word.lower().startswith(("http://", "https://"))


def _script(command: ShellForm, node: Run) -> str:
    """The shell script of a RUN, heredocs included (BuildKit: a RUN that is only a
    heredoc runs its body; otherwise the shell reads the heredocs itself)."""
    script = command.script
    if not node.heredocs:
        return script
    if len(node.heredocs) == 1 and heredoc_source(script.strip(), node.heredocs) is not None:
        return node.heredocs[0].content
    parts = [script]
    for heredoc in node.heredocs:
        body = (
            heredoc.content
            if heredoc.content.endswith("\n") or not heredoc.content
            else heredoc.content + "\n"
        )
        parts.append(body + heredoc.name)
    return "\n".join(parts)
