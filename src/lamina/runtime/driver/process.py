"""Driving an OCI runtime process in the foreground: signal forwarding and turning its
exit into ``docker run``'s exit code. Light imports only (shared by
:mod:`lamina.runtime.driver.runc` and ``lamina run``'s fast path,
:mod:`lamina.runtime.plans.replay`).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # not signal: it imports enum (start-up)
import os

from lamina.lightstd import loads, suppress

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from typing import Any

FORWARDED_SIGNALS = (
    _signal.SIGINT,
    _signal.SIGTERM,
    _signal.SIGHUP,
    _signal.SIGQUIT,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
)
# Exit codes of `docker run` when the container's process never ran.
EXIT_RUNTIME_FAILED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127


def log_error(path: str, offset: int) -> str | None:
    """The last error the runtime wrote to its JSON log after ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(1 << 20)
    except OSError:
        return None
    message = None
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            entry = loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", "")).strip() or message
    return message


def log_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def exit_code_for(error: str) -> int:
    """Docker's exit code for a process that could not be started."""
    lowered = error.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return EXIT_NOT_FOUND
    if "permission denied" in lowered:
        return EXIT_CANNOT_INVOKE
    return EXIT_RUNTIME_FAILED


class forward_signals:  # a context manager class: contextlib costs start-up time
    """Send FORWARDED_SIGNALS this process gets to ``pid`` (the runtime, which passes
    them on to the container's process) for the length of the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: object) -> None:
        with suppress(ProcessLookupError):
            os.kill(self._pid, signum)

    def __enter__(self) -> None:
        try:
            for sig in FORWARDED_SIGNALS:
                self._previous[sig] = _signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: nothing to forward from
            pass

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._previous.items():
            _signal.signal(signum, old)


def runtime_outcome(status: int, log: str, offset: int) -> tuple[int, str | None]:
    """``(exit code, runtime error)`` of a finished runtime process from its wait status
    code (negative: killed by that signal) and its JSON log past ``offset``: the
    container's own exit code, or 125/126/127 when the runtime says the process never
    ran (the runtime has then printed why on the inherited stderr)."""
    code = 128 - status if status < 0 else status
    if code != 0:
        error = log_error(log, offset)
        if error is not None:
            return exit_code_for(error), error
    return code, None
