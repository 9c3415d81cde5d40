"""Container commands: run, ps, logs, stop, kill, rm, exec, diff, commit, mount, umount.

Parsing and printing only: the CLI picks the store and the snapshotter
(``LAMINA_SNAPSHOTTER``); composing a run is :func:`lamina.runtime.run.run_container`,
the other commands are :mod:`lamina.runtime.lifecycle`'s steps.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from lamina.cli.output import print_json, print_table, time_ago
from lamina.errors import InvalidArgument, NotFound, Unsupported
from lamina.sysinfo import default_root

if TYPE_CHECKING:
    from lamina.image.images import Image
    from lamina.runtime.api import RunImage
    from lamina.runtime.bundle.resources import Resources
    from lamina.runtime.records.containers import Container, ContainerStore
    from lamina.snapshot.api import Snapshotter
    from lamina.store.api import Store


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
    from lamina.runtime.records.containers import ContainerStore

    return ContainerStore(_root(args))


class _StoreImages:
    """The images of the content store for lamina.runtime.run (an ImageSource): layers
    unpacked into snapshots by lamina.image.snapshots."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._images: dict[str, Image] = {}

    def resolve(self, ref: str) -> RunImage:
        from lamina.image.images import resolve
        from lamina.runtime.api import RunImage

        image = resolve(self._store, ref)
        self._images[str(image.id)] = image
        names = [n for n in image.names if not n.startswith("@")]
        return RunImage(
            id=str(image.id),
            ref=names[0] if names else str(image.id),
            config=image.config.config,
        )

    def unpack(self, image: RunImage, snapshotter: Snapshotter) -> str:
        from lamina.image.snapshots import unpack_to_snapshots

        return unpack_to_snapshots(self._store, self._images[image.id], snapshotter)


def add_network_options(p: argparse.ArgumentParser) -> None:
    """``run``'s network options, in a group of their own."""
    g = p.add_argument_group("network")
    g.add_argument(
        "--network",
        "--net",
        default="bridge",
        metavar="MODE",
        help="bridge (default: a private namespace on the 'lamina' network), host, none, "
        "or a network's name",
    )
    g.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:][HOST:]CTR[/udp]",
        help="publish a container port on the host",
    )
    g.add_argument("-P", "--publish-all", action="store_true", help="publish every EXPOSEd port")
    g.add_argument(
        "--add-host", action="append", default=[], metavar="NAME:IP", help="add to /etc/hosts"
    )
    g.add_argument("--dns", action="append", default=[], metavar="IP", help="a nameserver")
    g.add_argument(
        "--dns-search", action="append", default=[], metavar="DOMAIN", help="a search domain"
    )


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """``run``'s resource limits, in a group of their own (lamina.runtime.bundle.resources)."""
    g = p.add_argument_group("limits")
    g.add_argument("-m", "--memory", metavar="SIZE", help="memory limit, e.g. 64m (at least 6m)")
    g.add_argument(
        "--memory-swap",
        metavar="SIZE",
        help="memory plus swap limit (needs --memory; -1: no limit)",
    )
    g.add_argument(
        "--pids-limit", metavar="N", help="most processes and threads (default 2048; -1: no limit)"
    )
    g.add_argument("--cpus", metavar="N", help="CPUs the container may use, e.g. 0.5")
    g.add_argument("-c", "--cpu-shares", metavar="N", help="relative CPU weight (1024 = normal)")
    g.add_argument(
        "--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]", help="an rlimit"
    )
    g.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm (default 64m)")
    g.add_argument(
        "--tmpfs", action="append", default=[], metavar="PATH[:OPTS]", help="mount a tmpfs"
    )


def limit_options(args: argparse.Namespace) -> Resources:
    """The :class:`Resources` of ``run``'s limit options."""
    from lamina.runtime.bundle import resources as r

    fields: dict[str, Any] = {}
    if args.memory is not None:
        fields["memory"] = r.parse_size(args.memory, "--memory")
    if args.memory_swap is not None:
        fields["memory_swap"] = r.parse_swap(args.memory_swap)
    if args.pids_limit is not None:
        fields["pids_limit"] = r.parse_int(args.pids_limit, "--pids-limit")
    if args.cpus is not None:
        fields["cpus"] = r.parse_cpus(args.cpus)
    if args.cpu_shares is not None:
        fields["cpu_shares"] = r.parse_int(args.cpu_shares, "--cpu-shares")
    if args.shm_size is not None:
        fields["shm_size"] = r.parse_size(args.shm_size, "--shm-size")
    return r.Resources(
        ulimits=tuple(r.Ulimit.parse(u) for u in args.ulimit),
        tmpfs=tuple(r.Tmpfs.parse(t) for t in args.tmpfs),
        **fields,
    )


def add_init_options(p: argparse.ArgumentParser) -> None:
    """``run --init``, in a group of its own."""
    g = p.add_argument_group("init")
    g.add_argument(
        "--init",
        action="store_true",
        help="run an init (catatonit) as PID 1: it reaps zombies and forwards signals",
    )


def _init_path(args: argparse.Namespace) -> str | None:
    if not getattr(args, "init", False):
        return None
    from lamina.runtime.driver.initproc import find_init

    return find_init()


def cmd_run(args: argparse.Namespace) -> int:
    from lamina.cli.output import open_store
    from lamina.cli.security_args import security_options
    from lamina.runtime.bundle.spec import RunOptions, Volume, parse_env_option
    from lamina.runtime.run import RunRequest, run_container

    env = tuple(
        e for e in (parse_env_option(item, os.environ) for item in args.env) if e is not None
    )
    entrypoint = (
        None if args.entrypoint is None else ((args.entrypoint,) if args.entrypoint else ())
    )
    request = RunRequest(
        image=args.image,
        options=RunOptions(
            args=tuple(args.command),
            entrypoint=entrypoint,
            env=env,
            workdir=args.workdir,
            user=args.user,
            hostname=args.hostname,
            network=args.network,
            publish=tuple(args.publish),
            publish_all=args.publish_all,
            add_hosts=tuple(args.add_host),
            dns=tuple(args.dns),
            dns_search=tuple(args.dns_search),
            read_only=args.read_only,
            tty=args.tty,
            interactive=args.interactive,
            volumes=tuple(Volume.parse(v) for v in args.volume),
            security=security_options(args),
            resources=limit_options(args),
            init=_init_path(args),
        ),
        name=args.name,
        detach=args.detach,
        remove=args.rm,
        runtime=args.runtime,
    )
    _sweep_auto_removed(args)
    root = _root(args)
    outcome = run_container(
        root,
        _StoreImages(open_store(args)),
        _snapshotter(root),
        request,
        warn=lambda text: print(f"warning: {text}", file=sys.stderr),
    )
    if outcome.detached:
        print(outcome.container.id)
    return outcome.exit_code


def _sweep_auto_removed(args: argparse.Namespace) -> None:
    """Remove what a killed foreground ``run --rm`` left (Docker's daemon would have)."""
    from lamina.runtime.lifecycle import sweep_auto_removed
    from lamina.runtime.run import snapshot_remover

    sweep_auto_removed(_containers(args), snapshot_remover(_snapshotter(_root(args))))


def cmd_ps(args: argparse.Namespace) -> int:
    from lamina.runtime.lifecycle import list_containers
    from lamina.runtime.records.containers import parse_time, status_text

    _sweep_auto_removed(args)

    containers = list_containers(_containers(args), all=args.all)
    if args.quiet:
        for c in containers:
            print(c.short_id)
        return 0
    from lamina.network.stack import NetavarkNetworks

    nets = NetavarkNetworks(str(args.root or default_root()))

    def ports(c: Any) -> list[str]:
        return _ps_ports(nets.attachment(c.id)) if c.status == "running" else []

    if args.json:
        print_json([c.to_json() | {"ports": ports(c)} for c in containers])
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
                ", ".join(ports(c)),
                c.name,
            ]
        )
    print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows)
    return 0


def _ps_ports(record: dict[str, Any] | None) -> list[str]:
    """Docker's PORTS column: ``127.0.0.1:8080->80/tcp``, one per published port."""
    from lamina.network.ports import expand

    return [
        f"{m.get('host_ip') or '0.0.0.0'}:{m['host_port']}->{m['container_port']}/{m['protocol']}"
        for mapping in (record or {}).get("ports", [])
        for m in expand(mapping)
    ]


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
    from lamina.runtime.lifecycle import get, remove, sweep_networks
    from lamina.runtime.run import snapshot_remover

    cstore = _containers(args)
    sweep_networks(cstore)
    snap = _snapshotter(_root(args))
    for ref in args.containers:
        remove(cstore, get(cstore, ref), force=args.force, remove_snapshot=snapshot_remover(snap))
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
        privileged=args.privileged,
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
