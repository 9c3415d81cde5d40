"""Container lifecycle: the steps ``lamina run/ps/logs/stop/kill/rm/exec`` call.

``lamina run`` composes them in :func:`lamina.runtime.run.run_container`, in order::

    store = ContainerStore(root)
    runtime, warning = select_runtime(name, root)        # print the warning if any
    c = store.create(image_ref=..., image_id=..., runtime=runtime.name, name=...,
                     command=..., stop_signal=config.stop_signal, detached=..., auto_remove=...)
    # mount the snapshot on c.rootfs: prepare(container_key(c.id), parent=<the image's
    # init snapshot, made once with initlayer.make_placeholders>), mount_all(..., c.rootfs)
    c = store.update(c.id, snapshot_key=key)
    prepare_bundle(store, c, image_config, options)       # config.json, init files
    result = run_foreground(store, c, tty=..., interactive=...)   # exit with result.exit_code
    #   or: start_detached(store, c, tty=..., on_exit=[lamina rm argv] for --rm)
    # --rm (foreground): remove(store, get(store, c.id), force=True, remove_snapshot=...)

A record's status moves created -> running -> exited. The *keeper* (the foreground
``lamina run``, or the detached container's monitor) writes ``exit.json`` when the
process ends; :func:`refresh` folds it, and dead processes, into the record, so a
``kill -9`` of lamina leaves a record that ``ps`` shows truthfully and ``rm`` cleans.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lamina.errors import Conflict, InvalidArgument, LaminaError, NotFound, ToolError
from lamina.runtime.driver.process import EXIT_RUNTIME_FAILED
from lamina.runtime.driver.runc import OCIRuntime, RunResult, runtime_for
from lamina.runtime.records.containers import (
    Container,
    ContainerStore,
    now,
    write_exit,
    write_file_atomic,
)
from lamina.stateroot import CONFIG_FILE, PID_FILE
from lamina.sysinfo import start_time

if TYPE_CHECKING:
    from lamina.oci.config import ContainerConfig
    from lamina.runtime.bundle.spec import RunOptions
    from lamina.runtime.driver.oom import OomWatch

# The spec, user and init-layer modules are imported by the functions that need them:
# `lamina ps`, `stop` or `rm` should not pay for them (start-up time is a feature).

_POLL = 0.02
MAX_CONFIG_BYTES = 4 << 20


# ---------------------------------------------------------------------- processes


def _alive(pid: int, started: int) -> bool:
    now_start = start_time(pid)
    return now_start is not None and started in (0, now_start)


def parse_signal(text: str | int) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` (any case) -> 9."""
    if isinstance(text, int) or text.isdigit():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise InvalidArgument(f"invalid signal {text}")
        return number
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(
            f"invalid signal {text!r}", hint="use a name like TERM or a number"
        ) from None


# ---------------------------------------------------------------------- state


def _read_exit(store: ContainerStore, c: Container) -> dict[str, Any] | None:
    try:
        with open(store.exit_path(c), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pid_from_file(store: ContainerStore, c: Container) -> int:
    try:
        with open(os.path.join(store.bundle_dir(c), PID_FILE), encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def init_pid(store: ContainerStore, c: Container) -> int:
    """The host pid of the container's first process while it lives, else 0: the
    record's (detached runs), else the runtime's pid file (foreground runs)."""
    pid = c.pid or _pid_from_file(store, c)
    return pid if pid and _alive(pid, c.pid_start if c.pid else 0) else 0


def refresh(store: ContainerStore, c: Container) -> Container:
    """The record with its live status: exited once ``exit.json`` is there, or once
    neither its keeper nor its process lives any more (exit code then unknown)."""
    if c.status == "exited":
        return c
    done = _read_exit(store, c)
    try:
        if done is not None:
            code = done.get("exit_code")
            return store.update(
                c.id,
                status="exited",
                exit_code=code if isinstance(code, int) else None,
                finished=str(done.get("finished") or now()),
                oom_killed=done.get("oom_killed") is True,
                pid=0,
                keeper_pid=0,
            )
        if c.status == "created" or _alive(c.keeper_pid, c.keeper_start):
            return c
        pid = c.pid or _pid_from_file(store, c)
        if pid and _alive(pid, c.pid_start if c.pid else 0):
            return c
        return store.update(c.id, status="exited", finished=now(), pid=0, keeper_pid=0)
    except NotFound:
        # Removed meanwhile (a foreground `run --rm` removes its record once its
        # process ended): it has exited, and a waiter must not take it for running.
        return dataclasses.replace(c, status="exited", pid=0, keeper_pid=0)


def list_containers(store: ContainerStore, *, all: bool = False) -> list[Container]:
    """``ps``: running containers (``all``: every one), refreshed, oldest first."""
    out = [refresh(store, c) for c in store.list()]
    return out if all else [c for c in out if c.status == "running"]


def get(store: ContainerStore, ref: str) -> Container:
    """A container by id, name or id prefix, refreshed."""
    return refresh(store, store.get(ref))


def _runtime(store: ContainerStore, c: Container) -> OCIRuntime:
    return runtime_for(c.runtime, store.root)


def _load_spec(store: ContainerStore, c: Container) -> dict[str, Any]:
    path = os.path.join(store.bundle_dir(c), CONFIG_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        doc = json.loads(data)
    except FileNotFoundError:
        raise NotFound(f"container {c.short_id} has no bundle") from None
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read the bundle of container {c.short_id}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ToolError(f"the bundle of container {c.short_id} is damaged")
    return doc


# ---------------------------------------------------------------------- create


def _write_json(path: str, doc: dict[str, Any]) -> None:
    write_file_atomic(path, json.dumps(doc, indent=1).encode(), 0o600)


def default_hostname(c: Container, options: RunOptions) -> str:
    """``--hostname``, else the host's name with ``--network host`` (as Docker), else
    the short id."""
    if options.hostname:
        return options.hostname
    if options.network == "host":
        return os.uname().nodename or c.short_id
    return c.short_id


def prepare_bundle(
    store: ContainerStore,
    c: Container,
    config: ContainerConfig,
    options: RunOptions,
    *,
    attachment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the bundle of ``c`` (its rootfs must be in place) and return the spec;
    ``attachment`` is its network attachment (lamina.network) on a bridge network.

    Checks that volume sources exist, then resolves USER in the rootfs, creates WORKDIR
    there, writes the init files and ``bundle/config.json``
    (:func:`lamina.runtime.bundle.writer.write_bundle`).
    """
    from lamina.runtime.bundle.spec import working_dir
    from lamina.runtime.bundle.writer import write_bundle

    if not os.path.isdir(c.rootfs):
        raise NotFound(f"the root filesystem of container {c.short_id} is missing: {c.rootfs}")
    for vol in options.volumes:
        if not os.path.exists(vol.host):
            raise NotFound(
                f"volume source {vol.host!r} does not exist",
                hint="create it first: lamina does not make host directories",
            )
    return write_bundle(
        store.bundle_dir(c),
        rootfs=c.rootfs,
        init_dir=store.path(c.id),
        config=config,
        options=options,
        user=options.user if options.user is not None else config.user,
        workdir=working_dir(config, options),
        hostname=default_hostname(c, options),
        attachment=attachment,
        cgroups_path=cgroups_path(c, options),
    )


def cgroups_path(c: Container, options: RunOptions) -> str | None:
    """Docker's ``/<engine>/<id>`` when memory is limited, so the keeper knows the
    memory cgroup to watch for OOM kills (runc and crun pick different defaults)."""
    return f"/lamina/{c.id}" if options.resources.memory is not None else None


def _spec_cgroups_path(store: ContainerStore, c: Container) -> str | None:
    """The ``cgroupsPath`` of the container's spec, if it has one (see cgroups_path);
    the spec is parsed only then: most have none, and a run should not pay for it."""
    try:
        with open(os.path.join(store.bundle_dir(c), CONFIG_FILE), "rb") as f:
            if b'"cgroupsPath"' not in f.read(MAX_CONFIG_BYTES + 1):
                return None
        path = _load_spec(store, c).get("linux", {}).get("cgroupsPath")
    except (OSError, NotFound, ToolError, AttributeError):
        return None
    return path if isinstance(path, str) else None


def _oom_watch(store: ContainerStore, c: Container) -> OomWatch | None:
    """The OOM watch of a container whose spec names its cgroup."""
    path = _spec_cgroups_path(store, c)
    if path is None:
        return None
    from lamina.runtime.driver.oom import watch

    return watch(path)


# ---------------------------------------------------------------------- run


def _terminal_checks(tty: bool, interactive: bool) -> bool:
    """Whether the runtime needs its own process group (see OCIRuntime.run)."""
    stdin_tty = os.isatty(0)
    if tty and not stdin_tty:
        raise InvalidArgument(
            "the input device is not a TTY", hint="drop -t, or run lamina from a terminal"
        )
    return not (tty or (interactive and stdin_tty))


def run_foreground(
    store: ContainerStore,
    c: Container,
    *,
    tty: bool = False,
    interactive: bool = False,
    stdout: int | None = None,
    stderr: int | None = None,
) -> RunResult:
    """Run the prepared container and wait for it; the record ends ``exited``.

    stdin is the caller's with ``-i`` (else /dev/null); stdout and stderr are inherited
    unless given. Signals lamina receives are forwarded. ``RunResult.exit_code`` is
    what ``lamina run`` exits with (125/126/127 when the process never ran: the runtime
    has then printed why).
    """
    own_group = _terminal_checks(tty, interactive)
    runtime = _runtime(store, c)
    me = os.getpid()
    store.update(
        c.id, status="running", started=now(), keeper_pid=me, keeper_start=start_time(me) or 0
    )
    code: int | None = EXIT_RUNTIME_FAILED
    oom = _oom_watch(store, c)
    oom_killed = False
    try:
        result = runtime.run(
            c.id,
            store.bundle_dir(c),
            log=store.runtime_log(c),
            pid_file=os.path.join(store.bundle_dir(c), PID_FILE),
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            own_process_group=own_group,
        )
        code = result.exit_code
        return result
    finally:
        finished = now()
        if oom is not None:
            oom_killed = oom.finish()
        with contextlib.suppress(OSError):
            write_exit(store.path(c.id), code, finished, oom_killed=oom_killed)
        with contextlib.suppress(NotFound):  # `rm -f` from elsewhere removed it
            store.update(
                c.id,
                status="exited",
                exit_code=code,
                finished=finished,
                pid=0,
                keeper_pid=0,
                oom_killed=oom_killed,
            )


def start_detached(
    store: ContainerStore, c: Container, *, tty: bool = False, on_exit: Sequence[str] = ()
) -> Container:
    """Start the prepared container in the background (``run -d``); returns once its
    process runs. Output goes to the container's log; ``on_exit`` is a command the
    monitor runs after the process ended (``lamina rm`` for ``--rm``)."""
    runtime = _runtime(store, c)
    bundle = store.bundle_dir(c)
    spec = {
        "id": c.id,
        "dir": store.path(c.id),
        "bundle": bundle,
        "log": store.log_path(c),
        "runtime_log": store.runtime_log(c),
        "pid_file": os.path.join(bundle, PID_FILE),
        "tty": tty,
        "runtime": runtime.name,
        "binary": runtime.binary,
        "state_root": store.root,
        "wrap": list(runtime.wrap),
        "on_exit": list(on_exit),
        # set when memory is limited: the monitor reads the OOM kills there
        "cgroups_path": _spec_cgroups_path(store, c),
    }
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lamina.runtime.driver.monitor",
                json.dumps(spec),
                str(write_fd),
            ],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        os.close(read_fd)
        raise ToolError(f"cannot start the container monitor: {exc}") from exc
    finally:
        os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while data := pipe.read(65536):
            chunks.append(data)
    proc.wait()
    try:
        report = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        report = {}
    if "pid" not in report:
        error = report.get("error") or "the container monitor died"
        store.update(c.id, status="exited", exit_code=EXIT_RUNTIME_FAILED, finished=now())
        raise ToolError(f"cannot start container {c.short_id}: {error}")
    pid, monitor = int(report["pid"]), int(report["monitor"])
    return store.update(
        c.id,
        status="running",
        started=now(),
        pid=pid,
        pid_start=start_time(pid) or 0,
        keeper_pid=monitor,
        keeper_start=start_time(monitor) or 0,
    )


def exec_in(
    store: ContainerStore,
    c: Container,
    args: Sequence[str],
    *,
    env: Sequence[str] = (),
    tty: bool = False,
    interactive: bool = False,
    user: str | None = None,
    workdir: str | None = None,
    privileged: bool = False,
    stdout: int | None = None,
    stderr: int | None = None,
) -> RunResult:
    """``lamina exec``: run ``args`` in the running container, in the foreground.

    ``env`` items (NAME=value) add to the container's environment; ``user`` is resolved
    in the container's root like ``-u`` of run; ``workdir`` must exist there;
    ``privileged`` gives the process every capability (the container's seccomp filter
    still applies).
    """
    c = refresh(store, c)
    if c.status != "running":
        raise Conflict(f"container {c.name} is not running", hint="start it with lamina run")
    from lamina.runtime.bundle.security.capabilities import host_bounding_set
    from lamina.runtime.bundle.spec import exec_process
    from lamina.runtime.bundle.users import resolve_user

    own_group = _terminal_checks(tty, interactive)
    spec = _load_spec(store, c)
    resolved = resolve_user(c.rootfs, user, primary_in_groups=True) if user is not None else None
    process = exec_process(
        spec,
        args,
        env=env,
        tty=tty,
        cwd=workdir,
        user=resolved,
        privileged=privileged,
        all_capabilities=host_bounding_set(),
    )
    path = os.path.join(store.bundle_dir(c), f"exec-{os.urandom(6).hex()}.json")
    _write_json(path, process)
    try:
        return _runtime(store, c).exec(
            c.id,
            path,
            log=store.runtime_log(c),
            tty=tty,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            own_process_group=own_group,
        )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------- stop, kill, rm


def wait_exited(store: ContainerStore, c: Container, timeout: float) -> Container:
    deadline = time.monotonic() + timeout
    while True:
        c = refresh(store, c)
        if c.status != "running" or time.monotonic() >= deadline:
            return c
        time.sleep(_POLL)


def kill(store: ContainerStore, c: Container, sig: int | str = signal.SIGKILL) -> None:
    """Send a signal to the container's main process (Conflict if it does not run)."""
    number = parse_signal(sig)
    c = refresh(store, c)
    if c.status != "running":
        raise Conflict(f"container {c.name} is not running")
    _runtime(store, c).kill(c.id, number)


def stop(store: ContainerStore, c: Container, *, timeout: float = 10.0) -> Container:
    """The image's StopSignal (default SIGTERM), then SIGKILL after ``timeout`` seconds.
    Stopping a stopped container is no error."""
    c = refresh(store, c)
    if c.status != "running":
        return c
    runtime = _runtime(store, c)
    with contextlib.suppress(Conflict):
        runtime.kill(c.id, parse_signal(c.stop_signal or "SIGTERM"))
    c = wait_exited(store, c, timeout)
    if c.status == "running":
        with contextlib.suppress(Conflict):
            runtime.kill(c.id, signal.SIGKILL)
        c = wait_exited(store, c, 10.0)
    return c


def remove(
    store: ContainerStore,
    c: Container,
    *,
    force: bool = False,
    remove_snapshot: Callable[[Container], None] | None = None,
    unmount: Callable[[str], object] | None = None,
) -> None:
    """``lamina rm``: delete the runtime's state, unmount the rootfs, drop the snapshot
    (``remove_snapshot``, when the record has a key) and the directory.

    Every step is idempotent, so ``rm`` finishes what a crashed lamina left. A running
    container needs ``force`` (it is killed). ``unmount`` defaults to
    :func:`lamina.snapshot.mount.unmount_all`, applied only to a rootfs inside the
    container's directory (one lamina mounted).
    """
    c = refresh(store, c)
    if c.status == "running" and not force:
        raise Conflict(
            f"cannot remove running container {c.name}", hint="stop it first, or use rm -f"
        )
    try:
        runtime: OCIRuntime | None = _runtime(store, c)
    except (NotFound, ToolError):
        if c.status == "running":
            raise
        runtime = None  # never ran here, or the binary is gone: no state of its own left
    if runtime is not None:
        runtime.delete(c.id, force=True)
    # Let the keeper record the exit before the directory goes.
    deadline = time.monotonic() + 5.0
    while _alive(c.keeper_pid, c.keeper_start) and time.monotonic() < deadline:
        time.sleep(_POLL)
    release_network(store, c.id)
    if c.rootfs.startswith(store.path(c.id) + "/"):
        if unmount is None:
            from lamina.snapshot.mount import unmount_all

            unmount = unmount_all
        unmount(c.rootfs)
    if c.snapshot_key and remove_snapshot is not None:
        with contextlib.suppress(NotFound):
            remove_snapshot(c)
    store.remove_dir(c)


def sweep_auto_removed(
    store: ContainerStore, remove_snapshot: Callable[[Container], None] | None = None
) -> list[str]:
    """Remove the ``--rm`` containers that exited with no lamina left to remove them
    (their foreground ``lamina run`` was killed -9); returns their ids."""
    gone = []
    for record in store.list():
        if not record.auto_remove or record.status == "created":
            continue
        if record.keeper_pid and _alive(record.keeper_pid, record.keeper_start):
            continue  # its keeper lives: it removes the record itself
        c = refresh(store, record)
        if c.status != "exited":
            continue
        with contextlib.suppress(LaminaError, OSError):  # removed meanwhile, or next time
            remove(store, c, remove_snapshot=remove_snapshot)
            gone.append(c.id)
    return gone


def release_network(store: ContainerStore, container_id: str) -> None:
    """Tear down the container's network attachment, if it has one (bridge networks:
    the veth, firewall rules and address lease; see lamina.network.attachments)."""
    from lamina.network.attachments import detach

    detach(store.root, container_id)


def sweep_networks(store: ContainerStore) -> list[str]:
    """Release the networks of containers that no longer run (their keeper was killed
    before it could): run at the start of ``run`` and ``rm``."""
    from lamina.network.attachments import sweep

    def running(container_id: str) -> bool:
        # "created" counts as gone: the sweep spares a record while the process that
        # attached it lives, so a created record whose creator died never starts
        try:
            return refresh(store, store.get(container_id)).status == "running"
        except NotFound:
            return False

    return sweep(store.root, running)


# ---------------------------------------------------------------------- logs


def iter_logs(
    store: ContainerStore, c: Container, *, follow: bool = False, poll: float = 0.1
) -> Iterator[bytes]:
    """The container's output so far; with ``follow``, then new output until it exits."""
    path = store.log_path(c)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        if not follow:
            return
        while refresh(store, c).status == "running":
            time.sleep(poll)
            if os.path.exists(path):
                break
        else:
            return
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise LaminaError(f"cannot read the log of {c.name}: {exc.strerror}") from exc
    with f:
        while True:
            data = f.read(1 << 20)
            if data:
                yield data
                continue
            if not follow:
                return
            if refresh(store, c).status != "running":
                # one last read: output written just before the exit
                rest = f.read()
                if rest:
                    yield rest
                return
            time.sleep(poll)
