"""``lamina run``'s fast path: a warm run replayed from a cached *run plan*
(:mod:`lamina.runtime.plans.cache`, which says what a plan holds and when it is void),
in a few milliseconds of Python.

Runs that ask for nothing the plan does not hold take it and only do what is new per
container: a record, an active snapshot, one overlay mount, ``runc run``, and with
``--rm`` the cleanup. This module and what it imports stay free of dataclasses and
typing on purpose; the paths and options come from :mod:`lamina.stateroot`, as the full
path's do, and tests/runtime/test_runtime_parity.py holds the two to the same bundle,
mounts and records.

Eligible invocations: ``run [--rm] [--name NAME] [--network bridge|host]
[--security-opt seccomp=unconfined] IMAGE [CMD...]`` with the default runtime and the
overlay snapshotter (each option set its own plan); ``LAMINA_FASTRUN=0`` turns the fast
path off.
What it writes (records, snapshots, mounts) is the full path's format, so ``ps``,
``logs``, ``diff``, ``commit`` and ``rm`` treat its containers like any other, and a
kill -9 leaves what ``lamina rm`` cleans.
"""

from __future__ import annotations

import os

from lamina.errors import AlreadyExists
from lamina.lightstd import Flock, dumps, loads, suppress
from lamina.runtime.plans.cache import ADDRESS_SENTINEL, SENTINEL, SHORT_SENTINEL, load_plan
from lamina.runtime.records.fields import (
    check_name,
    is_id,
    now,
    os_error,
    random_name,
    write_exit,
    write_file_atomic,
)
from lamina.stateroot import (
    BUNDLE,
    CONFIG_FILE,
    CONTAINERS_LOCK,
    EXIT_FILE,
    INIT_FILE_NAMES,
    OVERLAY_OPTIONS,
    PID_FILE,
    ROOTFS,
    RUNTIME_LOG,
    STATE_FILE,
    attachments_dir,
    container_dir,
    container_key,
    containers_dir,
    snapshot_fs,
    snapshot_work,
    snapshots_dir,
)
from lamina.sysinfo import start_time

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


# ---------------------------------------------------------------------- records


def _taken_names(directory: str) -> set[str]:
    names: set[str] = set()
    for entry in os.listdir(directory):
        if not is_id(entry):
            continue
        try:
            with open(os.path.join(directory, entry, STATE_FILE), "rb") as fh:
                doc = loads(fh.read(1 << 20))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("name"), str):
            names.add(doc["name"])
    return names


def _write_record(directory: str, record: dict[str, Any], *, durable: bool) -> None:
    # the document ContainerStore._write writes (compact: no json module here)
    data = dumps(record, sort_keys=True).encode()
    write_file_atomic(os.path.join(directory, record["id"], STATE_FILE), data, durable=durable)


# ---------------------------------------------------------------------- the run


def process_args(plan: dict[str, Any], args: Sequence[str]) -> list[str]:
    """ENTRYPOINT + CMD as ``docker run`` combines them (lamina.runtime.bundle.spec.process_args
    without ``--entrypoint``)."""
    return [*plan["entrypoint"], *(args if args else plan["cmd"])]


def run(
    root: str, plan: dict[str, Any], args: Sequence[str], *, rm: bool, name: str | None
) -> int | None:
    """Run a container from ``plan`` in the foreground; its exit code. None when the plan
    turns out stale before anything was made (the caller then takes the full path)."""
    argv = process_args(plan, args)
    if not argv:
        return None  # the full path explains "no command specified"
    if name is not None:
        check_name(name)
    root = os.path.abspath(root)
    cdirs = containers_dir(root)
    snaps = snapshots_dir(root)
    cid = os.urandom(32).hex()
    cdir = container_dir(root, cid)
    rootfs = os.path.join(cdir, ROOTFS)
    key = container_key(cid)
    me = os.getpid()
    record: dict[str, Any] = {
        **plan["record"],
        "id": cid,
        "created": now(),
        "status": "running",
        "command": list(args),
        "rootfs": rootfs,
        "snapshot_key": key,
        "detached": False,
        "auto_remove": rm,
        "pid": 0,
        "pid_start": 0,
        "keeper_pid": me,
        "keeper_start": start_time(me) or 0,
        "finished": "",
        "exit_code": None,
        "oom_killed": False,  # plans run without --memory: no OOM watch
        "labels": {},
    }
    record["started"] = record["created"]
    os.makedirs(cdirs, mode=0o700, exist_ok=True)
    with Flock(os.path.join(cdirs, CONTAINERS_LOCK)):  # as ContainerStore.locked
        taken = _taken_names(cdirs)
        if name is None:
            name = random_name(taken)
        elif name in taken:
            raise AlreadyExists(
                f"the container name {name!r} is already in use",
                hint=f"remove that container (`lamina rm {name}`) or choose another name",
            )
        record["name"] = name
        try:
            os.mkdir(cdir, 0o700)
            os.mkdir(os.path.join(cdir, BUNDLE), 0o700)
            os.mkdir(rootfs, 0o755)
        except OSError as exc:
            raise os_error("create the directory", cdir, exc) from exc
        # With --rm the record lives for milliseconds: not worth two fsyncs.
        _write_record(cdirs, record, durable=not rm)
    try:
        return _start(root, plan, record, argv, snaps, rm=rm)
    except BaseException:
        _cleanup(root, plan, record, snaps, mounted=None)
        raise


def _start(
    root: str,
    plan: dict[str, Any],
    record: dict[str, Any],
    argv: list[str],
    snaps: str,
    *,
    rm: bool,
) -> int:
    from lamina.runtime.driver.process import forward_signals, log_size, runtime_outcome
    from lamina.snapshot.mount import mount_overlay
    from lamina.snapshot.raw_metadata import prepare_active

    cid = record["id"]
    cdir = container_dir(root, cid)
    rootfs = record["rootfs"]
    sid = prepare_active(snaps, record["snapshot_key"], plan["parent"], plan["chain"])
    mount_overlay(
        rootfs,
        [snapshot_fs(snaps, i) for i in plan["chain"]],
        (
            f"upperdir={snapshot_fs(snaps, sid)}",
            f"workdir={snapshot_work(snaps, sid)}",
            *OVERLAY_OPTIONS,
            # --rm: the upper dir dies with the container, so skip overlay's syncs of
            # it (its unmount would sync the whole upper filesystem: 100s of ms).
            *(("volatile",) if rm else ()),
        ),
    )
    try:
        address = _attach(root, plan, record)
        for init_name in INIT_FILE_NAMES:
            content = plan["init_files"][init_name].replace(SHORT_SENTINEL, cid[:12])
            write_file_atomic(
                os.path.join(cdir, init_name),
                content.replace(ADDRESS_SENTINEL, address).encode(),
                0o644,
                durable=False,
            )
        spec = plan["spec"]
        spec["process"]["args"] = argv
        text = dumps(spec).replace(SENTINEL, cid).replace(SHORT_SENTINEL, cid[:12])
        bundle = os.path.join(cdir, BUNDLE)
        write_file_atomic(os.path.join(bundle, CONFIG_FILE), text.encode(), durable=False)
        log = os.path.join(cdir, RUNTIME_LOG)
        runtime_argv = [
            *plan["runtime"],
            "--log",
            log,
            "--log-format",
            "json",
            "run",
            "--bundle",
            bundle,
            "--pid-file",
            os.path.join(bundle, PID_FILE),
            cid,
        ]
        offset = log_size(log)
        try:
            pid = os.posix_spawnp(
                runtime_argv[0],
                runtime_argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                setpgroup=0,  # Ctrl-C reaches the container once, through lamina
            )
        except OSError as exc:
            from lamina.errors import ToolError

            raise ToolError(f"cannot start {runtime_argv[0]}: {exc}") from exc
        with forward_signals(pid):
            _, status = os.waitpid(pid, 0)
        code, _error = runtime_outcome(os.waitstatus_to_exitcode(status), log, offset)
        if plan.get("network"):
            from lamina.network.attachments import detach_later

            # As the full path, an exited container keeps no address; but the exit
            # code need not wait for netavark's teardown (the next command waits for
            # it if it must: see detach_later).
            detach_later(root, cid)
    except BaseException:
        _cleanup(root, plan, record, snaps, mounted=rootfs)
        raise
    finished = now()
    if rm:
        _cleanup(root, plan, record, snaps, mounted=rootfs, network=False)
        return code
    write_exit(cdir, code, finished)
    with Flock(os.path.join(containers_dir(root), CONTAINERS_LOCK)):
        if os.path.exists(os.path.join(cdir, STATE_FILE)):  # `rm -f` from elsewhere
            record.update(status="exited", exit_code=code, finished=finished, keeper_pid=0)
            _write_record(containers_dir(root), record, durable=True)
    return code


def _cleanup(
    root: str,
    plan: dict[str, Any],
    record: dict[str, Any],
    snaps: str,
    *,
    mounted: str | None,
    network: bool = True,
) -> None:
    """What ``lamina rm -f`` does, for a container this process made and waited for
    (``network=False``: but its network, whose teardown is under way already)."""
    from lamina.errors import NotFound
    from lamina.snapshot.fsutil import remove_tree
    from lamina.snapshot.mount import unmount
    from lamina.snapshot.raw_metadata import remove_active

    cid = record["id"]
    argv = plan["runtime"]
    if network and plan.get("network"):
        from lamina.network.attachments import detach

        with suppress(OSError):
            detach(root, cid)
    # `runc run` deletes its state when the process ends; it is left only if runc died.
    if os.path.exists(os.path.join(argv[-1], cid)):
        pid = os.posix_spawnp(argv[0], [*argv, "delete", "--force", cid], os.environ)
        os.waitpid(pid, 0)
    if mounted is not None:
        with suppress(NotFound):
            unmount(mounted)
    with suppress(NotFound):
        remove_active(snaps, record["snapshot_key"])
    cdir = container_dir(root, cid)
    with suppress(FileNotFoundError):
        os.unlink(os.path.join(cdir, STATE_FILE))  # first: a half-removed dir is no record
    remove_tree(cdir)


def _attach(root: str, plan: dict[str, Any], record: dict[str, Any]) -> str:
    """Put the container on the plan's network (as lamina.runtime.run._attach does for
    a default run) after sweeping what dead containers left; its address ("" with host
    networking)."""
    network = plan.get("network")
    if not network:
        with suppress(FileNotFoundError):
            if os.listdir(attachments_dir(root)):  # cheap: empty but for running containers
                from lamina.network.attachments import settle

                settle(root)  # a teardown under way ends first: the next look sees it done
        return ""
    from lamina.network.attachments import attach, sweep

    cdirs = containers_dir(root)
    sweep(root, lambda cid: cid == record["id"] or _still_running(cdirs, cid))
    return str(attach(root, record["id"], record["name"], network)["ip"])


def _still_running(cdirs: str, cid: str) -> bool:
    """lamina.runtime.lifecycle.refresh's verdict on whether a record still runs, read
    without its imports: not once it has an exit file, or once neither its keeper nor
    its process lives."""
    cdir = os.path.join(cdirs, cid)
    try:
        with open(os.path.join(cdir, STATE_FILE), "rb") as fh:
            doc = loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("status") == "exited":
        return False
    if os.path.exists(os.path.join(cdir, EXIT_FILE)):
        return False
    if doc.get("status") != "running":
        return False  # created: its creator (the attachment's owner) died before it ran
    for pid_key, start_key in (("keeper_pid", "keeper_start"), ("pid", "pid_start")):
        pid = doc.get(pid_key)
        if isinstance(pid, int) and pid > 0:
            started = start_time(pid)
            if started is not None and doc.get(start_key) in (0, started):
                return True
    try:
        with open(os.path.join(cdir, BUNDLE, PID_FILE), encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return False
    return pid > 0 and start_time(pid) is not None


def try_run(
    root: str,
    image: str,
    args: Sequence[str],
    *,
    rm: bool,
    name: str | None,
    variant: str = "",
    network: str = "bridge",
) -> int | None:
    """The fast path if a valid plan for ``image`` exists, else None (take the full path).

    ``LAMINA_FASTRUN=0`` turns it off; ``LAMINA_FASTRUN=require`` (for tests and
    benchmarks) makes a missing or stale plan an error instead of a fallback."""
    mode = os.environ.get("LAMINA_FASTRUN", "1")
    if mode == "0":
        return None
    code = None
    if os.environ.get("LAMINA_SNAPSHOTTER", "overlay") == "overlay":
        plan = load_plan(root, image, variant, network)
        if plan is not None:
            from lamina.snapshot.raw_metadata import ChainChanged

            try:
                code = run(root, plan, args, rm=rm, name=name)
            except ChainChanged:
                code = None
    if code is None and mode == "require":
        from lamina.errors import NotFound

        raise NotFound(
            f"no valid run plan for {image!r} (LAMINA_FASTRUN=require)",
            hint="run it once with the default options to make one",
        )
    return code
