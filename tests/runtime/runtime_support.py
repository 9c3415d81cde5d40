"""Types shared by the runtime tests (imported by their conftest and test modules)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamina.runtime.driver.runc import RunResult
from lamina.runtime.records.containers import Container


@dataclass
class Ran:
    container: Container
    result: RunResult
    out: str
    err: str


Runner = Callable[..., Ran]
