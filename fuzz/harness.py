"""The worker: runs one fuzz target under atheris (``python -m fuzz.harness TARGET ...``).

A target module holds ``one_input(data: bytes) -> None`` and may widen ``ALLOWED``
(default: :class:`lamina.errors.LaminaError`, the errors lamina raises on purpose for
bad input). Any other exception escapes to atheris, which records the input as a crash.
An input that takes longer than ``--slow`` seconds raises :class:`SlowInput`, also a
crash: a parser of outside bytes must never be a denial of service.

The slowest input seen is written to ``<report>.slowest`` (bytes) and its time with the
execution count to ``<report>`` (JSON) whenever it changes and at exit, so the runner
can report it even when the worker dies on a finding.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from lamina.errors import LaminaError

T = TypeVar("T")


def tolerant(fn: Callable[..., T], *args: object) -> T | None:
    """``fn(*args)``, or None when it refuses with a lamina error: lets one input reach
    several parsers whatever the first says."""
    try:
        return fn(*args)
    except LaminaError:
        return None


class SlowInput(Exception):
    """An input that took longer than the time limit (a finding, not a lamina error)."""


def load_target(name: str, *, instrument: bool) -> ModuleType:
    """Import ``fuzz.targets.<name>``, instrumenting lamina's modules for coverage."""
    if not instrument:
        return importlib.import_module(f"fuzz.targets.{name}")
    import atheris

    with atheris.instrument_imports(include=["lamina", "fuzz.targets"]):
        return importlib.import_module(f"fuzz.targets.{name}")


class Recorder:
    """Wraps a target: allowed errors pass, slow inputs raise, the slowest is kept."""

    def __init__(self, module: ModuleType, report: str | None, slow: float) -> None:
        self._one: Callable[[bytes], None] = module.one_input
        self._allowed: tuple[type[BaseException], ...] = getattr(module, "ALLOWED", (LaminaError,))
        self._report = report
        self._slow = slow
        self.runs = 0
        self.slowest = 0.0
        self._slowest_input = b""

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        start = time.perf_counter()
        try:
            self._one(data)
        except self._allowed:
            pass
        finally:
            took = time.perf_counter() - start
            if took > self._slow:
                # on a shared machine one slow run may be another process's fault; a
                # slow parser is slow every time: keep the better of two timings
                took = min(took, self._time(data))
            if self.runs == 100:
                self.slowest = 0.0  # forget the warm-up (first imports, regex compiles)
            if took > self.slowest:
                self.slowest = took
                self._slowest_input = bytes(data)
                # warm-up inputs are slow; write only once things settle, or when slow
                if self.runs > 100 or took > self._slow:
                    self.write()
        if took > self._slow:
            raise SlowInput(f"input took {took:.3f} s (limit {self._slow} s): {data[:80]!r}")

    def _time(self, data: bytes) -> float:
        start = time.perf_counter()
        with contextlib.suppress(*self._allowed):
            self._one(data)
        return time.perf_counter() - start

    def write(self) -> None:
        if self._report is None:
            return
        with open(self._report + ".slowest", "wb") as f:
            f.write(self._slowest_input)
        with open(self._report, "w", encoding="utf-8") as f:
            json.dump({"runs": self.runs, "slowest_seconds": self.slowest}, f)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m fuzz.harness")
    parser.add_argument("target")
    parser.add_argument("--report", help="where to write the slowest input's JSON")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds; slower is a finding")
    args, libfuzzer_args = parser.parse_known_args(argv)
    import atheris

    module = load_target(args.target, instrument=True)
    recorder = Recorder(module, args.report, args.slow)
    # libFuzzer exits the process itself at the end of -runs, without returning here.
    atheris.Setup([sys.argv[0], *libfuzzer_args], recorder)
    try:
        atheris.Fuzz()
    finally:
        recorder.write()


if __name__ == "__main__":
    main(sys.argv[1:])
