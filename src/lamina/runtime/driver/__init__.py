"""Driving an OCI runtime binary (runc, crun) as subprocesses.

- :mod:`~lamina.runtime.driver.runc`: the driver (create, start, run, exec, kill,
  delete, state, ps) and the choice of runtime on this host's cgroup layout.
- :mod:`~lamina.runtime.driver.process`: a runtime process in the foreground: signal
  forwarding, its exit as ``docker run``'s exit code (light imports: the fast path).
- :mod:`~lamina.runtime.driver.monitor`: the keeper process of a detached container.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.driver.process import (
        EXIT_CANNOT_INVOKE,
        EXIT_NOT_FOUND,
        EXIT_RUNTIME_FAILED,
        FORWARDED_SIGNALS,
        exit_code_for,
        forward_signals,
        runtime_outcome,
    )
    from lamina.runtime.driver.runc import (
        OCIRuntime,
        RunResult,
        RuntimeState,
        cgroup_layout,
        find_binary,
        runtime_for,
        select_runtime,
    )

__all__ = [
    "EXIT_CANNOT_INVOKE",
    "EXIT_NOT_FOUND",
    "EXIT_RUNTIME_FAILED",
    "FORWARDED_SIGNALS",
    "OCIRuntime",
    "RunResult",
    "RuntimeState",
    "cgroup_layout",
    "exit_code_for",
    "find_binary",
    "forward_signals",
    "runtime_for",
    "runtime_outcome",
    "select_runtime",
]

_HOME = {
    "OCIRuntime": "runc",
    "RunResult": "runc",
    "RuntimeState": "runc",
    "cgroup_layout": "runc",
    "find_binary": "runc",
    "runtime_for": "runc",
    "select_runtime": "runc",
    "EXIT_CANNOT_INVOKE": "process",
    "EXIT_NOT_FOUND": "process",
    "EXIT_RUNTIME_FAILED": "process",
    "FORWARDED_SIGNALS": "process",
    "exit_code_for": "process",
    "forward_signals": "process",
    "runtime_outcome": "process",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
