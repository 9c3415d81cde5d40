"""The detached mount daemon: start it, stop it, and sweep what a dead one left behind.

``start`` runs ``python -m lamina.lazy.mount.daemon``, which forks once more and exits,
so the daemon is re-parented to init and outlives the caller (no zombie, no Popen
left running). The daemon reports "ok" (or the error) on a pipe once the tree is
mounted. Each mount has a state directory holding ``mount.json`` (design, mountpoint,
pid), the daemon's log and its cache; ``sweep`` unmounts and removes the ones whose
daemon is gone (kill -9 leaves a stale FUSE mount: "Transport endpoint is not
connected"; an EROFS mount whose blob nobody fills any more).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import cast

from lamina.errors import ToolError

from .api import MountHandle, Source, SourceSpec

DESIGNS = ("fuse", "erofs")
STATE = "mount.json"


def start(
    design: str,
    spec: SourceSpec,
    mountpoint: str,
    state_dir: str,
    *,
    block_size: int = 1 << 20,
    timeout: float = 120.0,
) -> MountHandle:
    if design not in DESIGNS:
        raise ToolError(f"unknown mount design {design!r}", hint=f"one of {', '.join(DESIGNS)}")
    os.makedirs(state_dir, exist_ok=True)
    log = os.path.join(state_dir, "daemon.log")
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "lamina.lazy.mount.daemon", "--design", design]
    cmd += ["--factory", spec.factory, "--arg", spec.arg, "--mountpoint", mountpoint]
    cmd += ["--state-dir", state_dir, "--block-size", str(block_size), "--ready-fd", str(w)]
    with open(log, "ab") as err:
        subprocess.run(
            cmd, check=False, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(w,)
        )
    os.close(w)
    try:
        reply = b""
        deadline = time.monotonic() + timeout
        while not reply.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise ToolError(f"mount daemon did not report within {timeout:.0f} s", hint=log)
            chunk = os.read(r, 4096)
            if not chunk:
                break
            reply += chunk
    finally:
        os.close(r)
    if not reply.startswith(b"ok "):
        tail = _tail(log)
        raise ToolError(f"mount daemon failed: {reply.decode().strip() or tail}", hint=log)
    handle = MountHandle(design, mountpoint, state_dir, int(reply.split()[1]))
    return handle


def stop(handle: MountHandle, *, timeout: float = 20.0) -> None:
    """SIGTERM the daemon (it unmounts), wait for it, clean the state directory."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(handle.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(handle.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(handle.pid):
        os.kill(handle.pid, signal.SIGKILL)
    _unmount(handle.design, handle.mountpoint)
    shutil.rmtree(handle.state_dir, ignore_errors=True)


def sweep(state_root: str) -> list[str]:
    """Unmount and remove every mount under ``state_root`` whose daemon is dead."""
    swept: list[str] = []
    if not os.path.isdir(state_root):
        return swept
    for name in sorted(os.listdir(state_root)):
        state_dir = os.path.join(state_root, name)
        handle = read_state(state_dir)
        if handle is None or _alive(handle.pid):
            continue
        _unmount(handle.design, handle.mountpoint)
        shutil.rmtree(state_dir, ignore_errors=True)
        swept.append(handle.mountpoint)
    return swept


def read_state(state_dir: str) -> MountHandle | None:
    try:
        with open(os.path.join(state_dir, STATE), encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return MountHandle(d["design"], d["mountpoint"], state_dir, int(d["pid"]))


def is_mounted(mountpoint: str) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == target:
                return True
    return False


def _unmount(design: str, mountpoint: str) -> None:
    # Lazy: a stale FUSE mount or a busy EROFS mount still detaches at once.
    while is_mounted(mountpoint):
        if design == "fuse":
            cmd = ["fusermount3", "-u", "-z", mountpoint]
            if subprocess.run(cmd, check=False, capture_output=True).returncode == 0:
                continue
        cmd = ["umount", "-l", mountpoint]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"cannot unmount {mountpoint}: {proc.stderr.strip()}")


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) mount daemon."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z" and b"lamina.lazy.mount.daemon" in cmdline


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:].strip()
    except OSError:
        return ""


def _load(spec: SourceSpec) -> Source:
    module, _, func = spec.factory.partition(":")
    return cast(Source, getattr(importlib.import_module(module), func)(spec.arg))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lamina.lazy.mount.daemon")
    p.add_argument("--design", choices=DESIGNS, required=True)
    p.add_argument("--factory", required=True)
    p.add_argument("--arg", default="{}")
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--block-size", type=int, default=1 << 20)
    p.add_argument("--ready-fd", type=int, required=True)
    a = p.parse_args(argv)
    if os.fork() != 0:
        os._exit(0)  # the caller reaps us; the child lives on under init
    os.setsid()
    ready_fd = a.ready_fd
    state_dir = os.path.abspath(a.state_dir)
    mountpoint = os.path.abspath(a.mountpoint)

    def ready() -> None:
        state = {"design": a.design, "mountpoint": mountpoint, "pid": os.getpid()}
        tmp = os.path.join(state_dir, STATE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, os.path.join(state_dir, STATE))
        os.write(ready_fd, f"ok {os.getpid()}\n".encode())
        os.close(ready_fd)

    try:
        source = _load(SourceSpec(a.factory, a.arg))
        if a.design == "fuse":
            from .fuse import serve
        else:
            from .erofs import serve
        serve(source, mountpoint, state_dir, a.block_size, ready)
    except BaseException as exc:
        # OSError: we already reported ready and closed the pipe; the log has it all.
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {type(exc).__name__}: {exc}\n".encode())
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
