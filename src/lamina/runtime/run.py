"""Running a container from an image: the composition ``lamina run`` calls (and, later,
the lazy runner).

In order: the image's layers become committed snapshots (one per ChainID, shared by
every container of every image); an *init snapshot* per image on top of them holds
empty ``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/hostname`` and the runtime's mount
points, so they exist even on a read-only root and never land in a container's upper
dir; the container gets a record, an active snapshot on the init snapshot mounted at
its rootfs, and a bundle; the OCI runtime runs it in the foreground or under a monitor
(``-d``); ``--rm`` removes it all afterwards. A plain foreground run also caches a
*run plan* that the fast path (:mod:`lamina.runtime.plans.replay`) replays.

The CLI picks the concrete store and snapshotter and prints; everything else is here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lamina.errors import AlreadyExists, NotFound
from lamina.runtime.api import ImageSource, RunImage
from lamina.runtime.bundle.spec import RunOptions
from lamina.stateroot import INIT_FILE_NAMES, container_key

if TYPE_CHECKING:
    from lamina.runtime.driver.runc import OCIRuntime
    from lamina.runtime.records.containers import Container, ContainerStore
    from lamina.snapshot.api import Mount, Snapshotter

__all__ = [
    "ImageSource",
    "RunImage",
    "RunOutcome",
    "RunRequest",
    "init_snapshot",
    "run_container",
    "snapshot_remover",
]


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One ``lamina run``: the image as the user typed it (also the run plan's key),
    the process and spec options, and what happens around the container.

    ``remove`` is ``--rm``; ``runtime`` the OCI runtime asked for (runc or crun; crun
    falls back to runc with a warning where it cannot run).
    """

    image: str
    options: RunOptions = field(default_factory=RunOptions)
    name: str | None = None
    detach: bool = False
    remove: bool = False
    runtime: str = "runc"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended: the container (its last record; removed again with ``--rm``),
    and the exit code ``lamina run`` exits with (0 once a detached container started)."""

    container: Container
    exit_code: int
    detached: bool = False


def run_container(
    root: str,
    images: ImageSource,
    snapshotter: Snapshotter,
    request: RunRequest,
    *,
    warn: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run ``request.image`` (from ``images``) as a new container under the lamina root
    ``root``, its root filesystem made of ``snapshotter``'s snapshots.

    Foreground: waits for the process and returns its exit code (125/126/127 when it
    never ran). Detached: returns once the process runs. ``warn`` gets the one-line
    warnings the user should see (a runtime fallback) before anything runs.
    """
    from lamina.runtime import lifecycle
    from lamina.runtime.driver.runc import select_runtime
    from lamina.runtime.plans.cache import refs_key
    from lamina.runtime.records.containers import ContainerStore
    from lamina.snapshot.mount import mount_all

    plan_refs = refs_key(root)  # before resolving: a tag moved meanwhile voids the plan
    image = images.resolve(request.image)
    options = request.options
    runtime, warning = select_runtime(request.runtime, root)
    if warning and warn is not None:
        warn(warning)
    parent = init_snapshot(snapshotter, images.unpack(image, snapshotter))
    cstore = ContainerStore(root)
    c = cstore.create(
        image_ref=image.ref,
        image_id=image.id,
        runtime=runtime.name,
        name=request.name,
        command=options.args,
        detached=request.detach,
        auto_remove=request.remove,
        stop_signal=image.config.stop_signal,
    )
    remove_snapshot = snapshot_remover(snapshotter)
    try:
        key = container_key(c.id)
        mounts = snapshotter.prepare(key, parent=parent)
        if request.remove:
            mounts = [_volatile(m) for m in mounts]
        c = cstore.update(c.id, snapshot_key=key)
        mount_all(mounts, c.rootfs)
        attachment = _attach(root, cstore, c, image, options)
        spec = lifecycle.prepare_bundle(cstore, c, image.config, options, attachment=attachment)
        variant = _plan_variant(request, snapshotter, runtime)
        if variant is not None:
            _save_plan(
                attachment,
                options.network,
                request.image,
                cstore,
                c,
                snap=snapshotter,
                key=key,
                parent=parent,
                spec=spec,
                image=image,
                runtime=runtime,
                refs_key=plan_refs,
                variant=variant,
            )
    except BaseException:
        lifecycle.remove(cstore, c, force=True, remove_snapshot=remove_snapshot)
        raise
    if request.detach:
        on_exit: list[str] = []
        if request.remove:
            # the monitor outlives this process: `lamina rm -f` cleans up after it
            on_exit = [sys.executable, "-m", "lamina.cli.main", "--root", root, "rm", "-f", c.id]
        c = lifecycle.start_detached(cstore, c, tty=options.tty, on_exit=on_exit)
        return RunOutcome(c, 0, detached=True)
    try:
        result = lifecycle.run_foreground(
            cstore, c, tty=options.tty, interactive=options.interactive
        )
    finally:
        # as Docker: a stopped container keeps its record, not its address and ports
        lifecycle.release_network(cstore, c.id)
    c = lifecycle.get(cstore, c.id)
    if request.remove:
        lifecycle.remove(cstore, c, force=True, remove_snapshot=remove_snapshot)
    return RunOutcome(c, result.exit_code)


def _attach(
    root: str, cstore: ContainerStore, c: Container, image: RunImage, options: RunOptions
) -> dict[str, Any] | None:
    """Put ``c`` on its network (``bridge``: the default one), after releasing the
    networks of containers that died unwatched; None with ``--network host|none``."""
    if options.network in ("host", "none"):
        return None
    from lamina.network.attachments import attach
    from lamina.network.config import DEFAULT_NETWORK
    from lamina.network.ports import check_unique, parse_publish, publish_all
    from lamina.runtime import lifecycle

    lifecycle.sweep_networks(cstore)
    ports = [parse_publish(p) for p in options.publish]
    if options.publish_all:
        ports += publish_all(image.config.exposed_ports or ())
    check_unique(ports)
    network = DEFAULT_NETWORK if options.network == "bridge" else options.network
    return attach(
        root,
        c.id,
        c.name,
        network,
        ports=ports,
        aliases=[] if network == DEFAULT_NETWORK else [c.name, c.short_id],
    )


def init_snapshot(snap: Snapshotter, top: str) -> str:
    """The committed init snapshot of the image whose top layer snapshot is ``top``
    (made once, then shared): the placeholders of
    :func:`lamina.runtime.bundle.initlayer.make_placeholders`."""
    from lamina.runtime.bundle.initlayer import make_placeholders

    name = f"{top}-init"
    try:
        snap.stat(name)
        return name
    except NotFound:
        pass
    key = f"init-{os.urandom(16).hex()}"  # not uuid: it imports `platform` (start-up time)
    snap.prepare(key, parent=top)
    try:
        make_placeholders(snap.upper_dir(key))
        snap.commit(name, key)
    except AlreadyExists:
        snap.remove(key)  # another process made it first
    except BaseException:
        snap.remove(key)
        raise
    return name


def snapshot_remover(snap: Snapshotter) -> Callable[[Container], None]:
    """The ``remove_snapshot`` of :func:`lamina.runtime.lifecycle.remove` for
    containers whose snapshots ``snap`` holds."""

    def remove_snapshot(c: Container) -> None:
        snap.remove(c.snapshot_key)

    return remove_snapshot


def _volatile(mount: Mount) -> Mount:
    """``--rm``: the upper dir dies with the container, so overlay need not sync it
    (its unmount would sync the whole upper filesystem: 100s of ms on a busy disk)."""
    if mount.type != "overlay":
        return mount
    return replace(mount, options=(*mount.options, "volatile"))


def _plan_variant(request: RunRequest, snap: Snapshotter, runtime: OCIRuntime) -> str | None:
    """The plan variant (lamina.runtime.plans.cache.VARIANTS) of this run if it used only
    what the fast path replays: the default options (or the defaults but seccomp
    unconfined; ``--network host`` is planned apart too), the overlay snapshotter and
    plain runc; else None."""
    from lamina.runtime.bundle.security.options import UNCONFINED, SecurityOptions
    from lamina.runtime.plans.cache import PLAN_NETWORKS
    from lamina.snapshot.overlay import OverlaySnapshotter

    if request.detach or not isinstance(snap, OverlaySnapshotter):
        return None
    if runtime.name != "runc" or runtime.wrap:
        return None
    options = request.options
    if options.network not in PLAN_NETWORKS:
        return None
    if options == RunOptions(args=options.args, network=options.network):
        return ""
    unconfined = RunOptions(
        args=options.args,
        network=options.network,
        security=SecurityOptions(seccomp=UNCONFINED),
    )
    return "unconfined" if options == unconfined else None


def _save_plan(
    attachment: dict[str, Any] | None,
    network_mode: str,
    image_ref: str,
    cstore: ContainerStore,
    c: Container,
    *,
    snap: Snapshotter,
    key: str,
    parent: str,
    spec: dict[str, Any],
    image: RunImage,
    runtime: OCIRuntime,
    refs_key: list[int] | None,
    variant: str = "",
) -> None:
    """Cache what the next plain run of ``image_ref`` can replay; skipped when this run
    changed the container's root (a WORKDIR made), which a replay would not redo."""
    from lamina.runtime.plans import cache

    upper = snap.upper_dir(key)
    if os.listdir(upper):
        return
    chain: list[int] = []
    for m in snap.mounts(key):
        for path in (m.option("lowerdir") or "").split(":"):
            sid_dir = os.path.dirname(path)
            if os.path.dirname(sid_dir) != snap.root or not os.path.basename(sid_dir).isdigit():
                return
            chain.append(int(os.path.basename(sid_dir)))
    if not chain:
        return
    init_files = {}
    for name in INIT_FILE_NAMES:
        with open(cstore.path(c.id, name), encoding="utf-8") as fh:
            init_files[name] = fh.read()
    config = image.config
    plan = cache.make_plan(
        image_ref,
        refs_key=refs_key,
        record={
            "image_ref": c.image_ref,
            "image_id": c.image_id,
            "runtime": c.runtime,
            "stop_signal": c.stop_signal,
        },
        runtime_argv=runtime.command(),
        parent=parent,
        chain=chain,
        spec=spec,
        container_id=c.id,
        entrypoint=config.entrypoint or (),
        cmd=config.cmd or (),
        init_files=init_files,
        host=cache.host_facts(),
        variant=variant,
        network=attachment["network"] if attachment else None,
        address=attachment["ip"] if attachment else None,
        mode=network_mode,
    )
    if plan is not None:
        cache.save_plan(cstore.root, plan)
