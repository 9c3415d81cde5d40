"""Ctrl-C and kill -9 of `lamina build` during a RUN step: nothing is left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.stateroot import runtime_state_dir

pytestmark = [pytest.mark.root, pytest.mark.interop]


def _runc_list(root: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["runc", "--root", runtime_state_dir(root, "runc"), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return json.loads(out or "null") or []


def _start_build(lamina: Lamina, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    root = str(lamina.root)  # type: ignore[attr-defined]
    lamina("bootstrap", "busybox", "-t", "bb")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb\nRUN sleep 1000\n")
    proc = subprocess.Popen(
        [*LAMINA, "--root", root, "build", "--progress", "plain", "-t", "x", str(ctx)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not any(c.get("status") == "running" for c in _runc_list(root)):
        assert proc.poll() is None, "the build ended early"
        assert time.monotonic() < deadline, "the RUN step never ran"
        time.sleep(0.05)
    return proc, root


def _assert_clean(root: str) -> None:
    assert _runc_list(root) == []
    assert root not in Path("/proc/self/mountinfo").read_text()


def test_ctrl_c_cancels_the_run_step(lamina: Lamina, tmp_path: Path) -> None:
    proc, root = _start_build(lamina, tmp_path)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
        took = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    assert took < 2, f"the build took {took:.1f} s to stop"
    assert code == 130
    _assert_clean(root)


def test_kill_9_of_build_is_swept_by_the_next_build(lamina: Lamina, tmp_path: Path) -> None:
    proc, root = _start_build(lamina, tmp_path)
    proc.kill()
    proc.wait()
    ctx = tmp_path / "ctx2"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb\nRUN true\n")
    lamina("build", "--progress", "plain", "-t", "y", str(ctx))
    _assert_clean(root)
