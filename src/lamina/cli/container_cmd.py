"""Container commands: run, ps, logs, stop, kill, rm, exec, diff, commit, mount, umount.

The wiring of rows 2-3: the image's layers become snapshots (one per ChainID, shared),
an init snapshot per image carries the mount points of /etc/hosts & co., each container
gets an active snapshot on top, mounted at its rootfs, and lamina.runtime drives runc.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lamina.cli.output import print_json, print_table, time_ago
from lamina.errors import AlreadyExists, InvalidArgument, NotFound, Unsupported
from lamina.sysinfo import default_root

if TYPE_CHECKING:
    from lamina.image.images import Image
    from lamina.runtime.containers import Container, ContainerStore
    from lamina.runtime.runc import OCIRuntime
    from lamina.snapshot.api import Mount, Snapshotter


def _root(args: argparse.Namespace) -> str:
    return str(args.root or default_root())


def _snapshotter(root: str) -> Snapshotter:
    kind = os.environ.get("LAMINA_SNAPSHOTTER", "overlay")
    if kind == "native":
        from lamina.snapshot.native import NativeSnapshotter

        return NativeSnapshotter(root)
    if kind != "overlay":
        raise InvalidArgument(
            f"unknown snapshotter {kind!r} in LAMINA_SNAPSHOTTER", hint="use overlay or native"
        )
    from lamina.snapshot.overlay import OverlaySnapshotter

    return OverlaySnapshotter(root)


def _containers(args: argparse.Namespace) -> ContainerStore:
    from lamina.runtime.containers import ContainerStore

    return ContainerStore(_root(args))


def _init_snapshot(snap: Snapshotter, top: str) -> str:
    """The per-image init snapshot: empty /etc/hosts, /etc/resolv.conf, /etc/hostname
    and the runtime's mount points, so they exist even on a read-only root and never
    land in a container's upper dir."""
    from lamina.runtime.initlayer import make_placeholders

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


def _remover(snap: Snapshotter) -> Callable[[Container], None]:
    def remove_snapshot(c: Container) -> None:
        snap.remove(c.snapshot_key)

    return remove_snapshot


def cmd_run(args: argparse.Namespace) -> int:
    from lamina.cli.output import open_store
    from lamina.image.images import resolve
    from lamina.image.snapshots import unpack_to_snapshots
    from lamina.runtime import lifecycle
    from lamina.runtime.runc import select_runtime
    from lamina.runtime.spec import RunOptions, Volume, parse_env_option
    from lamina.snapshot.mount import mount_all

    root = _root(args)
    store = open_store(args)
    refs_key = _refs_key(root)  # before resolving: a tag moved meanwhile voids the plan
    image = resolve(store, args.image)
    env = tuple(
        e for e in (parse_env_option(item, os.environ) for item in args.env) if e is not None
    )
    entrypoint = (
        None if args.entrypoint is None else ((args.entrypoint,) if args.entrypoint else ())
    )
    options = RunOptions(
        args=tuple(args.command),
        entrypoint=entrypoint,
        env=env,
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        network=args.network,
        read_only=args.read_only,
        tty=args.tty,
        interactive=args.interactive,
        volumes=tuple(Volume.parse(v) for v in args.volume),
    )
    runtime, warning = select_runtime(args.runtime, root)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    snap = _snapshotter(root)
    top = unpack_to_snapshots(store, image, snap)
    parent = _init_snapshot(snap, top)
    cstore = _containers(args)
    names = [n for n in image.names if not n.startswith("@")]
    c = cstore.create(
        image_ref=names[0] if names else str(image.id),
        image_id=str(image.id),
        runtime=runtime.name,
        name=args.name,
        command=tuple(args.command),
        detached=args.detach,
        auto_remove=args.rm,
        stop_signal=image.config.config.stop_signal,
    )
    try:
        key = f"container-{c.id}"
        mounts = snap.prepare(key, parent=parent)
        if args.rm:
            mounts = [_volatile(m) for m in mounts]
        c = cstore.update(c.id, snapshot_key=key)
        mount_all(mounts, c.rootfs)
        spec = lifecycle.prepare_bundle(cstore, c, image.config.config, options)
        if _plannable(args, snap, runtime):
            _save_run_plan(
                args.image,
                cstore,
                c,
                snap=snap,
                key=key,
                parent=parent,
                spec=spec,
                image=image,
                runtime=runtime,
                refs_key=refs_key,
            )
    except BaseException:
        lifecycle.remove(cstore, c, force=True, remove_snapshot=_remover(snap))
        raise
    if args.detach:
        on_exit: list[str] = []
        if args.rm:
            on_exit = [sys.executable, "-m", "lamina.cli.main", "--root", root, "rm", "-f", c.id]
        lifecycle.start_detached(cstore, c, tty=args.tty, on_exit=on_exit)
        print(c.id)
        return 0
    result = lifecycle.run_foreground(cstore, c, tty=args.tty, interactive=args.interactive)
    if args.rm:
        lifecycle.remove(
            cstore, lifecycle.get(cstore, c.id), force=True, remove_snapshot=_remover(snap)
        )
    return result.exit_code


def _volatile(mount: Mount) -> Mount:
    """``--rm``: the upper dir dies with the container, so overlay need not sync it
    (its unmount would sync the whole upper filesystem: 100s of ms on a busy disk)."""
    if mount.type != "overlay":
        return mount
    return replace(mount, options=(*mount.options, "volatile"))


def _refs_key(root: str) -> list[int] | None:
    try:
        st = os.stat(os.path.join(root, "refs.json"))
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _plannable(args: argparse.Namespace, snap: Snapshotter, runtime: OCIRuntime) -> bool:
    """Whether this run used only what the fast path replays (lamina.runtime.fastrun)."""
    from lamina.snapshot.overlay import OverlaySnapshotter

    defaults = (
        not (args.detach or args.interactive or args.tty or args.read_only)
        and not (args.env or args.volume)
        and args.workdir is None
        and args.user is None
        and args.entrypoint is None
        and args.hostname is None
        and args.network == "host"
    )
    return (
        defaults
        and isinstance(snap, OverlaySnapshotter)
        and runtime.name == "runc"
        and not runtime.wrap
    )


def _save_run_plan(
    image_ref: str,
    cstore: ContainerStore,
    c: Container,
    *,
    snap: Snapshotter,
    key: str,
    parent: str,
    spec: dict[str, Any],
    image: Image,
    runtime: OCIRuntime,
    refs_key: list[int] | None,
) -> None:
    """Cache what the next plain run of ``image_ref`` can replay; skipped when this run
    changed the container's root (a WORKDIR made), which a replay would not redo."""
    from lamina.runtime import fastrun

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
    for name in fastrun.INIT_NAMES:
        with open(cstore.path(c.id, name), encoding="utf-8") as fh:
            init_files[name] = fh.read()
    config = image.config.config
    plan = fastrun.make_plan(
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
        host=fastrun.host_facts(),
    )
    if plan is not None:
        fastrun.save_plan(cstore.root, plan)


def cmd_ps(args: argparse.Namespace) -> int:
    from lamina.runtime.containers import parse_time, status_text
    from lamina.runtime.lifecycle import list_containers

    containers = list_containers(_containers(args), all=args.all)
    if args.quiet:
        for c in containers:
            print(c.short_id)
        return 0
    if args.json:
        print_json([c.to_json() for c in containers])
        return 0
    from lamina.errors import InvalidReference
    from lamina.oci.reference import Reference

    rows = []
    for c in containers:
        command = " ".join(c.command)
        try:
            image = Reference.parse(c.image_ref).familiar()
        except InvalidReference:
            image = c.image_ref
        rows.append(
            [
                c.short_id,
                image,
                f'"{command[:20]}…"' if len(command) > 20 else f'"{command}"',
                time_ago(parse_time(c.created)),
                status_text(c),
                c.name,
            ]
        )
    print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], rows)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import get, iter_logs

    cstore = _containers(args)
    out = sys.stdout.buffer
    for chunk in iter_logs(cstore, get(cstore, args.container), follow=args.follow):
        out.write(chunk)
        out.flush()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import get, stop

    cstore = _containers(args)
    for ref in args.containers:
        stop(cstore, get(cstore, ref), timeout=args.time)
        print(ref)
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import get, kill, parse_signal

    cstore = _containers(args)
    for ref in args.containers:
        kill(cstore, get(cstore, ref), parse_signal(args.signal))
        print(ref)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import get, remove

    cstore = _containers(args)
    snap = _snapshotter(_root(args))
    for ref in args.containers:
        remove(cstore, get(cstore, ref), force=args.force, remove_snapshot=_remover(snap))
        print(ref)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import exec_in, get

    cstore = _containers(args)
    result = exec_in(
        cstore,
        get(cstore, args.container),
        args.command,
        env=tuple(args.env),
        tty=args.tty,
        interactive=args.interactive,
        user=args.user,
        workdir=args.workdir,
    )
    return result.exit_code


def _container_snapshot(args: argparse.Namespace) -> tuple[Container, Snapshotter]:
    from lamina.runtime.lifecycle import get

    c = get(_containers(args), args.container)
    snap = _snapshotter(_root(args))
    if not c.snapshot_key:
        raise NotFound(f"container {c.name} has no root filesystem snapshot")
    return c, snap


def cmd_diff(args: argparse.Namespace) -> int:
    from lamina.layers.diff import overlay_changes

    c, snap = _container_snapshot(args)
    if not snap.overlay:
        raise Unsupported(
            "lamina diff reads an overlay upper dir; this root uses the native snapshotter"
        )
    changes = overlay_changes(
        snap.upper_dir(c.snapshot_key), [snap.path(p) for p in snap.parents(c.snapshot_key)]
    )
    if args.json:
        print_json([{"kind": kind, "path": path} for kind, path in changes])
    else:
        for kind, path in changes:
            print(f"{kind} {path}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from lamina.cli.output import open_store
    from lamina.image.commit import commit_upper
    from lamina.image.images import normalize, resolve

    c, snap = _container_snapshot(args)
    if not snap.overlay:
        raise Unsupported("lamina commit needs the overlay snapshotter")
    store = open_store(args)
    base = resolve(store, c.image_id)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    result = commit_upper(
        store,
        base,
        snap.upper_dir(c.snapshot_key),
        normalize(args.ref) if args.ref else None,
        created_by=" ".join(c.command),
        comment=args.message,
        author=args.author,
        changes=args.change,
        source_date_epoch=int(epoch) if epoch else None,
    )
    print(str(result.image_id))
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from lamina.snapshot.mount import is_mounted, mount_all

    c, snap = _container_snapshot(args)
    if not is_mounted(c.rootfs):
        mount_all(snap.mounts(c.snapshot_key), c.rootfs)
    print(c.rootfs)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import refresh
    from lamina.snapshot.mount import is_mounted, unmount

    c, _ = _container_snapshot(args)
    c = refresh(_containers(args), c)
    if c.status == "running":
        raise InvalidArgument(f"container {c.name} is running", hint="stop it first")
    if is_mounted(c.rootfs):
        unmount(c.rootfs)
    print(c.name)
    return 0
