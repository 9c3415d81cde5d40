"""Running containers: one API that the CLI, the builder and (later) the lazy runner call.

The names below are imported on first use (PEP 562), so that importing one submodule
(``lamina run``'s fast path imports a few light ones) does not load the others.

- :mod:`lamina.runtime.run`: a container run composed from an image (snapshots, init
  layer, record, bundle, OCI runtime): :func:`run_container` with a :class:`RunRequest`.
- :mod:`lamina.runtime.lifecycle`: the steps of every container command (prepare the
  bundle, run, start detached, exec, stop, kill, remove, logs, ps).
- :mod:`lamina.runtime.bundle`: the OCI bundle: ``config.json`` (Docker's rules), users
  and WORKDIR inside the root, the init files.
- :mod:`lamina.runtime.driver`: the OCI runtime binaries (runc, crun), their
  foreground processes, the monitor of detached containers.
- :mod:`lamina.runtime.records`: container records under ``<root>/containers``.
- :mod:`lamina.runtime.plans`: run plans and their replay, ``lamina run``'s fast path.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.lifecycle import (
        exec_in,
        get,
        iter_logs,
        kill,
        list_containers,
        parse_signal,
        prepare_bundle,
        refresh,
        remove,
        run_foreground,
        start_detached,
        stop,
        wait_exited,
    )
    from lamina.runtime.run import (
        RunOutcome,
        RunRequest,
        init_snapshot,
        run_container,
        snapshot_remover,
    )

__all__ = [
    "RunOutcome",
    "RunRequest",
    "exec_in",
    "get",
    "init_snapshot",
    "iter_logs",
    "kill",
    "list_containers",
    "parse_signal",
    "prepare_bundle",
    "refresh",
    "remove",
    "run_container",
    "run_foreground",
    "snapshot_remover",
    "start_detached",
    "stop",
    "wait_exited",
]

_HOME = {
    "RunOutcome": "run",
    "RunRequest": "run",
    "init_snapshot": "run",
    "run_container": "run",
    "snapshot_remover": "run",
    "exec_in": "lifecycle",
    "get": "lifecycle",
    "iter_logs": "lifecycle",
    "kill": "lifecycle",
    "list_containers": "lifecycle",
    "parse_signal": "lifecycle",
    "prepare_bundle": "lifecycle",
    "refresh": "lifecycle",
    "remove": "lifecycle",
    "run_foreground": "lifecycle",
    "start_detached": "lifecycle",
    "stop": "lifecycle",
    "wait_exited": "lifecycle",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
