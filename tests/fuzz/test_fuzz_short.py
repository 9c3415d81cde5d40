"""The short pass of every fuzz target (``make fuzz`` runs the long one).

Each target runs a few thousand executions under atheris, in its own process (atheris
instruments lamina's bytecode and libFuzzer owns the process's exit), from the
checked-in seed corpus ``fuzz/corpus/<target>/``. A crash (an exception that is not a
lamina error), a failed property, or an input slower than the limit fails the test
with libFuzzer's log, which holds the input and its traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS  # noqa: E402

RUNS = 2000
# The long run's limit is 1 s; the short pass runs beside the rest of the suite on a
# loaded machine, so it allows more before calling an input slow.
SLOW_SECONDS = 3


def test_every_target_has_seeds() -> None:
    for target in TARGETS:
        seeds = ROOT / "fuzz" / "corpus" / target
        assert seeds.is_dir() and any(seeds.iterdir()), f"no seed corpus for {target}"


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_short_pass(target: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            target,
            f"--runs={RUNS}",
            f"--slow={SLOW_SECONDS}",
            f"--findings={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = proc.stdout + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    line = next(s for s in proc.stdout.splitlines() if s.startswith(target))
    executed = int(line.split()[1])
    assert executed >= RUNS, line
    assert not list((tmp_path / target).iterdir()), report  # no crash or timeout inputs
