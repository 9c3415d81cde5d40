"""``lamina run``'s fast path: a warm run from a cached *run plan*, in a few milliseconds
of Python.

Why: a plain ``lamina run --rm IMAGE CMD`` resolves the image, checks its layers are
unpacked, reads its passwd file, builds the runtime spec... and imports the modules
(and dataclasses) that do all that, which on a small machine costs over 100 ms, twice
what bare ``runc run`` takes. Yet for one image and the default options all of it
comes out the same every time. So the first (slow, full) run writes a *plan*: the
image's snapshot chain, the finished ``config.json`` with a placeholder container id,
the init files, the runtime's argv. Later runs that ask for nothing else take the plan
and only do what is new per container: a record, an active snapshot, one overlay mount,
``runc run``, and with ``--rm`` the cleanup. This module and what it imports stay free
of dataclasses and typing on purpose.

A plan is used only while it provably still holds; else the full path runs and writes
a new one. It is keyed by the image reference as typed and is void when
``refs.json`` changed (a tag moved, an image was removed or added), when the host's
``/etc/hosts``/``/etc/resolv.conf``/host name/RLIMIT_NOFILE changed (the init files and
spec depend on them), when the runtime binary is gone, or when the snapshot chain in the
metadata differs (checked under the metadata lock before mounting).

Eligible invocations: ``run [--rm] [--name NAME] IMAGE [CMD...]`` with the default
runtime and the overlay snapshotter; ``LAMINA_FASTRUN=0`` turns the fast path off.
What it writes (records, snapshots, mounts) is the full path's format, so ``ps``,
``logs``, ``diff``, ``commit`` and ``rm`` treat its containers like any other, and a
kill -9 leaves what ``lamina rm`` cleans.
"""

from __future__ import annotations

import os

from lamina.errors import AlreadyExists
from lamina.lite import Flock, dumps, loads, suppress
from lamina.runtime.basics import (
    check_name,
    is_id,
    now,
    os_error,
    random_name,
    write_exit,
    write_file_atomic,
)
from lamina.sysinfo import start_time

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# Bump when what the full path puts in a spec changes, so older plans are not replayed.
PLAN_VERSION = 2
# The container id written into a plan's spec in place of the real one.
SENTINEL = "0" * 64
HOST_FILES = ("/etc/hosts", "/etc/resolv.conf")
INIT_NAMES = ("hosts", "resolv.conf", "hostname")
# lamina.snapshot.overlay.OVERLAY_OPTIONS (not imported: that module is not light)
OVERLAY_OPTIONS = ("index=off", "redirect_dir=off", "metacopy=off")
_MAX_PLAN = 4 << 20


# ---------------------------------------------------------------------- plans


def plan_path(root: str, image: str) -> str | None:
    """Where the plan for ``image`` (as typed) lives; None when the name is too long
    to be a file name."""
    name = image.encode().hex()
    if len(name) > 200:
        return None
    return os.path.join(root, "cache", "run", name + ".json")


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _nofile_hard() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def host_facts() -> dict[str, Any]:
    """What the init files and the spec of a default run depend on, besides the image."""
    return {
        "nodename": os.uname().nodename,
        "files": {p: _stat_key(p) for p in HOST_FILES},
        "nofile": _nofile_hard(),
    }


def make_plan(
    image: str,
    *,
    refs_key: list[int] | None,
    record: dict[str, Any],
    runtime_argv: Sequence[str],
    parent: str,
    chain: Sequence[int],
    spec: dict[str, Any],
    container_id: str,
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    init_files: dict[str, str],
    host: dict[str, Any],
) -> dict[str, Any] | None:
    """The plan of a finished full-path run of ``image`` (its container ``container_id``
    prepared with default options), or None when it cannot be replayed."""
    text = dumps(spec, sort_keys=True)
    text = text.replace(container_id, SENTINEL)
    if container_id[:12] in text or refs_key is None:
        return None  # the short id is in the spec (e.g. as host name): not replayable
    out = loads(text)
    out["process"]["args"] = None
    return {
        "version": PLAN_VERSION,
        "image": image,
        "refs": refs_key,
        "host": host,
        "record": record,
        "runtime": list(runtime_argv),
        "parent": parent,
        "chain": list(chain),
        "spec": out,
        "entrypoint": list(entrypoint),
        "cmd": list(cmd),
        "init_files": init_files,
    }


def save_plan(root: str, plan: dict[str, Any]) -> None:
    path = plan_path(root, plan["image"])
    if path is None:
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # a cache: losing it to a power cut costs one slow run, so no fsync
    write_file_atomic(path, dumps(plan).encode(), durable=False)


def load_plan(root: str, image: str) -> dict[str, Any] | None:
    """The plan for ``image`` if there is one and it still holds (see the module doc)."""
    path = plan_path(root, image)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_PLAN + 1)
        plan = loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("version") != PLAN_VERSION:
        return None
    if plan.get("image") != image or plan.get("refs") != _stat_key(os.path.join(root, "refs.json")):
        return None
    if plan.get("host") != host_facts():
        return None
    argv = plan.get("runtime")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    if not any(os.access(a, os.X_OK) for a in argv if a.startswith("/")):
        return None
    return plan


# ---------------------------------------------------------------------- records


def _taken_names(directory: str) -> set[str]:
    names: set[str] = set()
    for entry in os.listdir(directory):
        if not is_id(entry):
            continue
        try:
            with open(os.path.join(directory, entry, "state.json"), "rb") as fh:
                doc = loads(fh.read(1 << 20))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("name"), str):
            names.add(doc["name"])
    return names


def _write_record(directory: str, record: dict[str, Any], *, durable: bool) -> None:
    # the document ContainerStore._write writes (compact: no json module here)
    data = dumps(record, sort_keys=True).encode()
    write_file_atomic(os.path.join(directory, record["id"], "state.json"), data, durable=durable)


# ---------------------------------------------------------------------- the run


def process_args(plan: dict[str, Any], args: Sequence[str]) -> list[str]:
    """ENTRYPOINT + CMD as ``docker run`` combines them (lamina.runtime.spec.process_args
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
    cdirs = os.path.join(root, "containers")
    snaps = os.path.join(root, "snapshots")
    cid = os.urandom(32).hex()
    cdir = os.path.join(cdirs, cid)
    rootfs = os.path.join(cdir, "rootfs")
    key = f"container-{cid}"
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
        "labels": {},
    }
    record["started"] = record["created"]
    os.makedirs(cdirs, mode=0o700, exist_ok=True)
    with Flock(os.path.join(cdirs, ".lock")):  # as ContainerStore.locked
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
            os.mkdir(os.path.join(cdir, "bundle"), 0o700)
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
    from lamina.runtime.procs import forward_signals, log_size, runtime_outcome
    from lamina.snapshot.direct import prepare_active
    from lamina.snapshot.mount import mount_overlay

    cid = record["id"]
    cdir = os.path.join(root, "containers", cid)
    rootfs = record["rootfs"]
    sid = prepare_active(snaps, record["snapshot_key"], plan["parent"], plan["chain"])
    mount_overlay(
        rootfs,
        [os.path.join(snaps, str(i), "fs") for i in plan["chain"]],
        (
            f"upperdir={os.path.join(snaps, str(sid), 'fs')}",
            f"workdir={os.path.join(snaps, str(sid), 'work')}",
            *OVERLAY_OPTIONS,
            # --rm: the upper dir dies with the container, so skip overlay's syncs of
            # it (its unmount would sync the whole upper filesystem: 100s of ms).
            *(("volatile",) if rm else ()),
        ),
    )
    try:
        for init_name in INIT_NAMES:
            write_file_atomic(
                os.path.join(cdir, init_name),
                plan["init_files"][init_name].encode(),
                0o644,
                durable=False,
            )
        spec = plan["spec"]
        spec["process"]["args"] = argv
        text = dumps(spec).replace(SENTINEL, cid)
        bundle = os.path.join(cdir, "bundle")
        write_file_atomic(os.path.join(bundle, "config.json"), text.encode(), durable=False)
        log = os.path.join(cdir, "runtime.log")
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
            os.path.join(bundle, "pid"),
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
    except BaseException:
        _cleanup(root, plan, record, snaps, mounted=rootfs)
        raise
    finished = now()
    if rm:
        _cleanup(root, plan, record, snaps, mounted=rootfs)
        return code
    write_exit(cdir, code, finished)
    with Flock(os.path.join(root, "containers", ".lock")):
        if os.path.exists(os.path.join(cdir, "state.json")):  # `rm -f` from elsewhere
            record.update(status="exited", exit_code=code, finished=finished, keeper_pid=0)
            _write_record(os.path.join(root, "containers"), record, durable=True)
    return code


def _cleanup(
    root: str, plan: dict[str, Any], record: dict[str, Any], snaps: str, *, mounted: str | None
) -> None:
    """What ``lamina rm -f`` does, for a container this process made and waited for."""
    from lamina.errors import NotFound
    from lamina.snapshot.direct import remove_active
    from lamina.snapshot.fsutil import remove_tree
    from lamina.snapshot.mount import unmount

    cid = record["id"]
    argv = plan["runtime"]
    # `runc run` deletes its state when the process ends; it is left only if runc died.
    if os.path.exists(os.path.join(argv[-1], cid)):
        pid = os.posix_spawnp(argv[0], [*argv, "delete", "--force", cid], os.environ)
        os.waitpid(pid, 0)
    if mounted is not None:
        with suppress(NotFound):
            unmount(mounted)
    with suppress(NotFound):
        remove_active(snaps, record["snapshot_key"])
    cdir = os.path.join(root, "containers", cid)
    with suppress(FileNotFoundError):
        os.unlink(os.path.join(cdir, "state.json"))  # first: a half-removed dir is no record
    remove_tree(cdir)


def try_run(
    root: str, image: str, args: Sequence[str], *, rm: bool, name: str | None
) -> int | None:
    """The fast path if a valid plan for ``image`` exists, else None (take the full path).

    ``LAMINA_FASTRUN=0`` turns it off; ``LAMINA_FASTRUN=require`` (for tests and
    benchmarks) makes a missing or stale plan an error instead of a fallback."""
    mode = os.environ.get("LAMINA_FASTRUN", "1")
    if mode == "0":
        return None
    code = None
    if os.environ.get("LAMINA_SNAPSHOTTER", "overlay") == "overlay":
        plan = load_plan(root, image)
        if plan is not None:
            from lamina.snapshot.direct import ChainChanged

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
