"""The OCI runtime driver: runc (the default) and crun, as subprocesses.

Every runtime keeps its state under ``<lamina root>/runtime/<name>`` (``--root``), so
lamina's containers never mix with other users of runc on the host, and the runtime's
own error messages go to a JSON log (``--log``) from which the driver takes the one
line it reports.

crun 1.8 refuses this host's *hybrid* cgroup layout (cgroup v1 controllers under
``/sys/fs/cgroup`` plus a cgroup2 mount at ``/sys/fs/cgroup/unified``: "cgroups in
hybrid mode not supported"). Unmounting ``unified`` in a private mount namespace makes
it see plain v1, so on such hosts every crun command runs as
``unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec crun ...'``; the unmount is
private to that namespace (``unshare`` makes mounts private) and never reaches the
host. When that does not work, :func:`select_runtime` falls back to runc and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from lamina.errors import Conflict, InvalidArgument, NotFound, ToolError
from lamina.runtime.driver.process import (
    forward_signals,
    log_error,
    log_size,
    runtime_outcome,
)
from lamina.stateroot import runtime_state_dir

__all__ = [
    "OCIRuntime",
    "RunResult",
    "RuntimeState",
    "cgroup_layout",
    "find_binary",
    "runtime_for",
    "select_runtime",
]

RUNTIMES = ("runc", "crun")
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HYBRID_UNMOUNT = 'umount /sys/fs/cgroup/unified && exec "$0" "$@"'
_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """``runc state``: status is created, running, paused or stopped."""

    id: str
    status: str
    pid: int


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a foreground ``run``/``exec`` ended.

    ``runtime_error`` is the runtime's own error (the process never started, or the
    runtime failed); the runtime has already printed it on the inherited stderr.
    """

    exit_code: int
    runtime_error: str | None = None


def find_binary(name: str, search_path: str | None = None) -> str:
    """The path of the runtime ``name``; NotFound with the package to install."""
    if name not in RUNTIMES:
        raise InvalidArgument(f"unknown OCI runtime {name!r}", hint="use --runtime runc or crun")
    path = (
        search_path if search_path is not None else os.environ.get("PATH", "") + ":" + (SEARCH_PATH)
    )
    found = shutil.which(name, path=path)
    if found is None:
        raise NotFound(
            f"the OCI runtime {name!r} is not installed",
            hint=f"install it: apt-get install {name}",
        )
    return found


def cgroup_layout(mountinfo: str | None = None) -> str:
    """``unified`` (cgroup v2), ``hybrid`` (v1 + a v2 mount at .../unified) or ``legacy``."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return "legacy"
    from lamina.snapshot.mountinfo import parse_mountinfo

    fstypes: dict[str, str] = {}
    for m in parse_mountinfo(mountinfo.splitlines()):
        fstypes[m.mount_point] = m.fstype  # later mounts hide earlier ones
    if fstypes.get("/sys/fs/cgroup") == "cgroup2":
        return "unified"
    if fstypes.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    return "legacy"


class OCIRuntime:
    """One OCI runtime binary with lamina's state directory.

    Lifecycle of a container (runtime-spec runtime.md): ``create`` (namespaces and
    mounts set up, process waiting) -> ``start`` -> (process exits: ``stopped``) ->
    ``delete``; ``run`` is create + start + wait in the foreground. ``kill`` signals
    the container's init; ``delete(force=True)`` kills and removes whatever is left and
    is a no-op for an unknown id.
    """

    def __init__(
        self, name: str, state_root: str, *, binary: str | None = None, wrap: Sequence[str] = ()
    ) -> None:
        if name not in RUNTIMES:
            raise InvalidArgument(
                f"unknown OCI runtime {name!r}", hint="use --runtime runc or crun"
            )
        self.name = name
        self.binary = binary or find_binary(name)
        self.state_dir = runtime_state_dir(state_root, name)
        self.wrap = tuple(wrap)

    def __repr__(self) -> str:
        return f"OCIRuntime({self.name!r}, {self.binary!r})"

    def command(self, *args: str, log: str | None = None) -> list[str]:
        """The full argv of one runtime command."""
        argv = [*self.wrap, self.binary, "--root", self.state_dir]
        if log is not None:
            argv += ["--log", log, "--log-format", "json"]
        return argv + list(args)

    def _ensure_state_dir(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)

    def _call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.command(*args)
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolError(f"{self.name} {args[0]} failed: {exc}") from exc
        if check and proc.returncode != 0:
            raise ToolError(f"{self.name} {args[0]} failed: {_last_line(proc.stderr)}")
        return proc

    # ------------------------------------------------------------------ commands

    def run(
        self,
        container_id: str,
        bundle: str,
        *,
        log: str,
        pid_file: str | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        own_process_group: bool = True,
        cancel_on_interrupt: bool = False,
    ) -> RunResult:
        """Run the container in the foreground and wait for it (``runc run``).

        With ``cancel_on_interrupt`` (a build step) SIGINT or SIGTERM is no message for
        the container but a cancel: its process is killed at once (a ``sleep`` as PID 1
        would ignore the forwarded signal) and KeyboardInterrupt raised once runc ended.

        The standard streams are inherited unless given. The signals of
        :data:`FORWARDED_SIGNALS` that reach lamina meanwhile are forwarded. With
        ``own_process_group`` the runtime gets its own process group, so a Ctrl-C at
        lamina's terminal reaches the container once (through lamina), not twice; pass
        False when the runtime must read the terminal (``-t``, or ``-i`` on a tty).
        """
        self._ensure_state_dir()
        args = ["run", "--bundle", bundle]
        if pid_file is not None:
            args += ["--pid-file", pid_file]
        return self._foreground(
            self.command(*args, container_id, log=log),
            log,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            own_process_group=own_process_group,
            cancel=container_id if cancel_on_interrupt else None,
        )

    def exec(
        self,
        container_id: str,
        process_json: str,
        *,
        log: str,
        tty: bool = False,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        own_process_group: bool = True,
    ) -> RunResult:
        """Run ``process_json`` (a runtime-spec process) in the running container."""
        args = ["exec", "--process", process_json]
        if tty:
            args.append("--tty")
        return self._foreground(
            self.command(*args, container_id, log=log),
            log,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            own_process_group=own_process_group,
        )

    def _foreground(
        self,
        argv: list[str],
        log: str,
        *,
        stdin: int | IO[Any] | None,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        own_process_group: bool,
        cancel: str | None = None,
    ) -> RunResult:
        offset = log_size(log)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                process_group=0 if own_process_group else None,
            )
        except OSError as exc:
            raise ToolError(f"cannot start {self.name}: {exc}") from exc
        if cancel is not None:
            return self._wait_cancellable(proc, cancel, log, offset)
        with forward_signals(proc.pid):
            code = proc.wait()
        return RunResult(*runtime_outcome(code, log, offset))

    def _wait_cancellable(
        self, proc: subprocess.Popen[bytes], container_id: str, log: str, offset: int
    ) -> RunResult:
        cancelled: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            cancelled.append(signum)
            with contextlib.suppress(Conflict, ToolError):
                self.kill(container_id, signal.SIGKILL)

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: no signals to take
            pass
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if cancelled:  # the signal came before runc had created it
                        with contextlib.suppress(Conflict, ToolError):
                            self.kill(container_id, signal.SIGKILL)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        if cancelled:
            raise KeyboardInterrupt
        return RunResult(*runtime_outcome(code, log, offset))

    def create(
        self,
        container_id: str,
        bundle: str,
        *,
        log: str,
        pid_file: str,
        console_socket: str | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        cwd: str | None = None,
    ) -> int:
        """``runc create``: the container's process waits for :meth:`start`; returns its pid.

        Without a console socket the process inherits the given standard streams.
        """
        self._ensure_state_dir()
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket is not None:
            args += ["--console-socket", console_socket]
        offset = log_size(log)
        try:
            proc = subprocess.run(
                self.command(*args, container_id, log=log),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                timeout=_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolError(f"{self.name} create failed: {exc}") from exc
        if proc.returncode != 0:
            error = log_error(log, offset) or f"exit status {proc.returncode}"
            raise ToolError(f"{self.name} create failed: {error}")
        try:
            with open(pid_file, encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError) as exc:
            raise ToolError(f"{self.name} create wrote no pid file: {exc}") from exc

    def start(self, container_id: str) -> None:
        self._call("start", container_id)

    def state(self, container_id: str) -> RuntimeState | None:
        """The runtime's view of the container, or None when it does not know it."""
        proc = self._call("state", container_id, check=False)
        if proc.returncode != 0:
            if "does not exist" in proc.stderr or "not found" in proc.stderr.lower():
                return None
            raise ToolError(f"{self.name} state failed: {_last_line(proc.stderr)}")
        try:
            doc = json.loads(proc.stdout)
            return RuntimeState(str(doc["id"]), str(doc["status"]), int(doc.get("pid") or 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolError(f"{self.name} state printed no state: {exc}") from exc

    def kill(self, container_id: str, sig: int = signal.SIGTERM) -> None:
        """Signal the container's init. Conflict when it is not running."""
        proc = self._call("kill", container_id, str(int(sig)), check=False)
        if proc.returncode != 0:
            text = proc.stderr.lower()
            if (
                "not running" in text
                or "finished" in text
                or "does not exist" in text
                or ("stopped" in text)
            ):
                raise Conflict(f"container {container_id[:12]} is not running")
            raise ToolError(f"{self.name} kill failed: {_last_line(proc.stderr)}")

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove the runtime's state (``force``: kill a live container first)."""
        if self._no_state(container_id):
            return  # nothing to delete: `runc run` deletes its own state when it ends
        args = ["delete", *(["--force"] if force else []), container_id]
        proc = self._call(*args, check=False)
        if proc.returncode != 0 and "does not exist" not in proc.stderr:
            if self.state(container_id) is None:  # gone meanwhile (or never created)
                return
            raise ToolError(f"{self.name} delete failed: {_last_line(proc.stderr)}")

    def _no_state(self, container_id: str) -> bool:
        """Whether the runtime surely holds no state for ``container_id``: runc and crun
        keep a directory per container under ``--root``. Spares ``lamina run --rm`` a
        runtime call (a process start) after a foreground run."""
        if not container_id or "/" in container_id or container_id in (".", ".."):
            return False
        return not os.path.lexists(os.path.join(self.state_dir, container_id))

    def ps(self, container_id: str) -> list[int]:
        """Host pids of the container's processes."""
        proc = self._call("ps", "--format", "json", container_id)
        try:
            pids = json.loads(proc.stdout or "[]")
        except ValueError as exc:
            raise ToolError(f"{self.name} ps printed no pid list: {exc}") from exc
        return [int(p) for p in pids or []]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no error message"
    last = lines[-1]
    # runc's logrus lines: time="..." level=error msg="..."
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0]
    return last


def _hybrid_wrapper(search_path: str = SEARCH_PATH) -> tuple[str, ...] | None:
    """The ``unshare`` prefix that hides the cgroup2 mount from crun, if it works."""
    unshare = shutil.which("unshare", path=search_path)
    sh = shutil.which("sh", path=search_path)
    if unshare is None or sh is None:
        return None
    wrap = (unshare, "-m", sh, "-c", _HYBRID_UNMOUNT)
    try:
        probe = subprocess.run([*wrap, "true"], capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return wrap if probe.returncode == 0 else None


def select_runtime(
    name: str, state_root: str, *, search_path: str | None = None
) -> tuple[OCIRuntime, str | None]:
    """The runtime to use for ``--runtime name``, and a one-line warning when lamina
    had to fall back (crun on hybrid cgroups without a working workaround -> runc)."""
    binary = find_binary(name, search_path)
    if name != "crun" or cgroup_layout() != "hybrid":
        return OCIRuntime(name, state_root, binary=binary), None
    wrap = _hybrid_wrapper(search_path if search_path is not None else SEARCH_PATH)
    if wrap is not None:
        return OCIRuntime(name, state_root, binary=binary, wrap=wrap), None
    fallback = OCIRuntime("runc", state_root, binary=find_binary("runc", search_path))
    return fallback, (
        "crun cannot run on this host's hybrid cgroup layout and the unshare workaround "
        "failed; using runc"
    )


def runtime_for(name: str, state_root: str, *, search_path: str | None = None) -> OCIRuntime:
    """The runtime a container was created with (no fallback: its state lives there)."""
    runtime, _ = select_runtime(name, state_root, search_path=search_path)
    if runtime.name != name:
        raise ToolError(f"the OCI runtime {name!r} of this container cannot run here")
    return runtime
