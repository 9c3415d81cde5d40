"""Fixtures shared by every test package: stores, the busybox base, the lamina CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.image.bootstrap.busybox import make_busybox_rootfs
from lamina.store.local import LocalStore

# pytester: tests of the suite's own machinery run pytest on small temporary trees.
# helpers.skips: on CI (env CI set) a skip not in tests/skip_allowlist.py is a failure.
pytest_plugins = ["pytester", "helpers.skips"]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem from Debian's busybox-static (made once per session)."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    make_busybox_rootfs(str(root))
    return root


@pytest.fixture
def lamina(tmp_path: Path) -> Iterator[Lamina]:
    """Run the real `lamina` command with its own --root; returns the finished process.

    `check=True` (the default) fails the test with the command's stderr when it exits
    non-zero; pass `check=False` to look at a failure.
    """
    root = tmp_path / "lamina-root"

    def run(
        *args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [*LAMINA, "--root", str(root), *args],
            capture_output=True,
            text=True,
            input=input,
            env=full_env,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"lamina {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    run.root = root  # type: ignore[attr-defined]
    yield run
    # A failed test may leave containers running and rootfs mounted: clean up so later
    # tests (and pytest's tmp dir removal) are not disturbed.
    if (root / "containers").is_dir():
        ids = run("ps", "-a", "-q", check=False).stdout.split()
        if ids:
            run("rm", "-f", *ids, check=False)
    prefix = str(root) + "/"
    mounted = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix) or line.split()[4] == str(root)
    ]
    for target in sorted(mounted, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``python -c SCRIPT ARGS...`` with pipes; every child is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
