"""Types shared by the runtime tests (imported by their conftest and test modules)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamina.runtime.containers import Container
from lamina.runtime.runc import RunResult


@dataclass
class Ran:
    container: Container
    result: RunResult
    out: str
    err: str


Runner = Callable[..., Ran]
