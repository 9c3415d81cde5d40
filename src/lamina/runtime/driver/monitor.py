"""The keeper of a detached container: ``python -m lamina.runtime.driver.monitor SPEC FD``.

lamina has no daemon, yet ``lamina ps -a`` must show a detached container's exit code.
So ``lamina run -d`` starts this small process, which detaches from lamina (fork, new
session), makes itself a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER), creates and
starts the container through the OCI runtime (whose init process, once ``runc create``
exits, is re-parented to the subreaper: us), reports ``{"pid", "monitor"}`` or
``{"error"}`` on the inherited pipe ``FD`` and closes it, then waits for the container's
init, writes ``exit.json`` in the container's directory, deletes the runtime's state and
runs the optional ``on_exit`` command (``lamina rm`` for ``run -d --rm``).

Output: without a tty the container's stdout and stderr are the ``log`` file itself
(the runtime passes them on), so nothing is lost if this process dies. With ``-t`` the
runtime hands over the pty master through ``--console-socket`` and this process copies
it into the log.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from lamina.errors import LaminaError
from lamina.runtime.driver.oom import was_oom_killed
from lamina.runtime.driver.runc import OCIRuntime
from lamina.runtime.records.containers import now, write_exit

PR_SET_CHILD_SUBREAPER = 36
_ACCEPT_TIMEOUT = 30.0


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _copy_console(master: int, log_fd: int) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last slave closed
            return
        if not data:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(log_fd, view) :]


def _receive_console(server: socket.socket) -> int:
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    if not fds:
        raise OSError("the runtime sent no console")
    return fds[0]


def _wait_for(pid: int) -> int | None:
    """Reap children until ``pid`` exits; its exit code (128+N for signal N)."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return None  # not our child after all: nothing to report
        except InterruptedError:
            continue
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def run_monitor(spec: dict[str, Any], report_fd: int) -> int:
    directory = spec["dir"]
    os.chdir(directory)
    runtime = OCIRuntime(
        spec["runtime"],
        spec["state_root"],
        binary=spec["binary"],
        wrap=spec["wrap"],
    )
    container_id = spec["id"]
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    copier: threading.Thread | None = None
    try:
        _subreaper()
        if spec["tty"]:
            # A unix socket path has at most 107 bytes and runtimes resolve a relative
            # one against different directories: use a private short directory.
            sock_dir = tempfile.mkdtemp(prefix="lamina-console-")
            sock_path = os.path.join(sock_dir, "console.sock")
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(sock_path)
            server.listen(1)
            server.settimeout(_ACCEPT_TIMEOUT)
            received: list[int] = []
            errors: list[BaseException] = []

            def accept() -> None:
                try:
                    received.append(_receive_console(server))
                except OSError as exc:
                    errors.append(exc)

            acceptor = threading.Thread(target=accept, daemon=True)
            acceptor.start()
            pid = runtime.create(
                container_id,
                spec["bundle"],
                log=spec["runtime_log"],
                pid_file=spec["pid_file"],
                console_socket=sock_path,
            )
            acceptor.join(_ACCEPT_TIMEOUT)
            server.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
            if not received:
                raise OSError(f"no console from the runtime: {errors[0] if errors else 'timeout'}")
            copier = threading.Thread(target=_copy_console, args=(received[0], log_fd), daemon=True)
            copier.start()
        else:
            pid = runtime.create(
                container_id,
                spec["bundle"],
                log=spec["runtime_log"],
                pid_file=spec["pid_file"],
                stdout=log_fd,
                stderr=log_fd,
            )
        runtime.start(container_id)
    except (LaminaError, OSError) as exc:
        with contextlib.suppress(LaminaError):
            runtime.delete(container_id, force=True)
        os.write(report_fd, json.dumps({"error": str(exc)}).encode())
        os.close(report_fd)
        return 1
    os.write(report_fd, json.dumps({"pid": pid, "monitor": os.getpid()}).encode())
    os.close(report_fd)

    code = _wait_for(pid)
    if copier is not None:
        copier.join(5.0)
    os.close(log_fd)
    cgroups_path = spec.get("cgroups_path")
    oom_killed = isinstance(cgroups_path, str) and was_oom_killed(cgroups_path)
    with contextlib.suppress(OSError):
        write_exit(directory, code, now(), oom_killed=oom_killed)
    with contextlib.suppress(LaminaError):
        runtime.delete(container_id, force=True)
    on_exit = spec.get("on_exit")
    if on_exit:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                on_exit, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
            )
    return 0


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    report_fd = int(argv[1])
    # Detach: the parent (lamina) reaps the intermediate at once; the keeper lives on in
    # a session of its own, with no terminal to lose.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    return run_monitor(spec, report_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
