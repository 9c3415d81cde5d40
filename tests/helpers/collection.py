"""Which ``test_*.py`` files on disk pytest does not collect.

pytest skips whole directories silently: its default ``norecursedirs`` includes ``build``
and ``dist``, so ``tests/build/`` once hid 626 builder tests from every run. The check
compares what ``pytest --collect-only -q`` reports with the test files on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def files_on_disk(tests: Path) -> set[str]:
    """Every ``test_*.py`` under ``tests``, as paths relative to ``tests.parent``."""
    return {p.relative_to(tests.parent).as_posix() for p in tests.rglob("test_*.py")}


def collected_files(tests: Path) -> set[str]:
    """The files ``pytest --collect-only -q`` finds tests in, run from ``tests.parent``.

    A collection error fails: a file that does not import is not collected either.
    """
    # Not PYTEST_ADDOPTS, nor the xdist worker's variables of the run that calls this.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            tests.name,
        ],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"pytest --collect-only exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr}"
        )
    files = set()
    for line in proc.stdout.splitlines():
        # -q prints one test id a line (path::name[params]), then a blank line and a summary.
        if "::" in line:
            files.add(line.split("::", 1)[0])
    return files


def uncollected_files(tests: Path) -> list[str]:
    """The ``test_*.py`` files under ``tests`` that hold no collected test, sorted."""
    return sorted(files_on_disk(tests) - collected_files(tests))
