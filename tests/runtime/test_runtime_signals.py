"""Signals end to end through the real CLI: `stop` of a foreground container."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.runtime.driver.runc import OCIRuntime

pytestmark = [pytest.mark.root, pytest.mark.interop]


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    lamina("bootstrap", "busybox", "-t", "bb")
    # Warm runs of each option set take the fast path (a cached run plan): make one.
    lamina("run", "--rm", "bb", "true")
    lamina("run", "--rm", "--name", "warm", "bb", "true")
    return lamina


def _foreground(bb: Lamina, *args: str) -> subprocess.Popen[str]:
    root = str(bb.root)  # type: ignore[attr-defined]
    return subprocess.Popen(
        [*LAMINA, "--root", root, "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_running(bb: Lamina, name: str) -> None:
    runtime = OCIRuntime("runc", str(bb.root))  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while True:
        ps = json.loads(bb("ps", "--json").stdout)
        ids = [c["id"] for c in ps if c["name"] == name]
        # the record says running before runc has started the process: wait for runc
        state = runtime.state(ids[0]) if ids else None
        if state is not None and state.status == "running":
            return
        assert time.monotonic() < deadline, f"{name} never ran"
        time.sleep(0.05)


@pytest.mark.parametrize("rm", [False, True], ids=["keep", "rm"])
def test_stop_of_foreground_returns_on_exit(bb: Lamina, rm: bool) -> None:
    # `sleep` as PID 1 ignores SIGTERM: stop escalates to SIGKILL after -t, then must
    # return as soon as the process is gone (it used to wait 10 s more
    # when a warm `run --rm` removed the record meanwhile).
    proc = _foreground(bb, *(["--rm"] if rm else []), "--name", "x", "bb", "sleep", "1000")
    try:
        _wait_running(bb, "x")
        started = time.monotonic()
        out = bb("stop", "-t", "2", "x")
        took = time.monotonic() - started
        assert out.stdout.strip() == "x"
        assert took < 3.5, f"stop took {took:.1f} s"
        assert proc.wait(5) == 137
    finally:
        proc.kill()
        proc.wait()
    listed = json.loads(bb("ps", "-a", "--json").stdout)
    if rm:
        assert listed == []
    else:
        assert [(c["status"], c["exit_code"]) for c in listed] == [("exited", 137)]


def test_init_is_pid_1_and_reaps(bb: Lamina) -> None:
    script = (
        "tr '\\0' ' ' < /proc/1/cmdline; echo; (sleep 0.2 &); sleep 1;"
        " grep -l '^State:.*Z' /proc/[0-9]*/status; echo done"
    )
    out = bb("run", "--rm", "--init", "bb", "sh", "-c", script).stdout.splitlines()
    assert out[0].startswith("/run/lamina-init -- sh -c")
    assert out[1:] == ["done"], "an orphan was left a zombie"  # the init reaped it
    plain = bb("run", "--rm", "bb", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline").stdout
    assert not plain.startswith("/run/lamina-init")


def test_init_works_on_a_read_only_root(bb: Lamina) -> None:
    # The init is bound at /run/lamina-init: the runtime must not need to create its
    # mount point in a root it cannot write.
    proc = bb(
        "run", "--rm", "--init", "--read-only", "bb", "sh", "-c",
        "cat /proc/1/comm; touch /x 2>/dev/null && echo wrote || echo refused",
    )  # fmt: skip
    assert proc.stdout.splitlines() == ["lamina-init", "refused"]


def test_init_passes_sigterm_to_the_command(bb: Lamina) -> None:
    # Without an init, `sleep` is PID 1 and the kernel drops SIGTERM: stop waits -t.
    proc = _foreground(bb, "--init", "--name", "s", "bb", "sh", "-c", "sleep 1000")
    try:
        _wait_running(bb, "s")
        started = time.monotonic()
        bb("stop", "-t", "10", "s")
        took = time.monotonic() - started
        assert took < 3, f"stop took {took:.1f} s: SIGTERM did not end the command"
        assert proc.wait(5) == 143
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_of_run_rm_is_cleaned_by_the_next_command(bb: Lamina) -> None:
    root = str(bb.root)  # type: ignore[attr-defined]
    proc = _foreground(bb, "--rm", "--name", "k", "bb", "sleep", "1")
    _wait_running(bb, "k")
    proc.kill()  # kill -9 of lamina: the container lives on, then exits unwatched
    proc.wait()
    time.sleep(1.5)  # the container's `sleep 1` ends with no lamina to remove it
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    assert root not in Path("/proc/self/mountinfo").read_text()
    assert not [p for p in (Path(root) / "containers").iterdir() if not p.name.startswith(".")]
