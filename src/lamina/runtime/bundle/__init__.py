"""The OCI runtime-spec bundle of a container: its ``config.json`` and the files it binds.

- :mod:`~lamina.runtime.bundle.spec` (pure): run options and ``config.json``, with
  Docker's ENTRYPOINT/CMD rules, environment, mounts, namespaces and defaults.
- :mod:`~lamina.runtime.bundle.users`: ``-u``/``USER`` resolved from the image's own
  ``/etc/passwd`` and ``/etc/group`` (read inside the root, capped), WORKDIR creation.
- :mod:`~lamina.runtime.bundle.initlayer`: ``/etc/hosts``, ``/etc/resolv.conf``,
  ``/etc/hostname`` and the mount-point placeholders of the init layer.
- :mod:`~lamina.runtime.bundle.security` (a package): what confines the container
  (seccomp, capabilities, no-new-privileges, devices, ``--privileged``).
- :mod:`~lamina.runtime.bundle.writer`: all of it written for a mounted root, the one
  bundle writer of ``lamina run`` and the builder's RUN steps.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.bundle.initlayer import (
        PLACEHOLDERS,
        make_placeholders,
        write_init_files,
    )
    from lamina.runtime.bundle.security.devices import (
        DeviceRequest,
    )
    from lamina.runtime.bundle.security.options import (
        SecurityOptions,
    )
    from lamina.runtime.bundle.spec import (
        INIT_FILES,
        NOFILE_LIMIT,
        RunOptions,
        Volume,
        build_spec,
        exec_process,
        parse_env_option,
        process_args,
        working_dir,
    )
    from lamina.runtime.bundle.users import (
        ResolvedUser,
        prepare_workdir,
        resolve_user,
        resolve_user_in,
    )
    from lamina.runtime.bundle.writer import (
        nofile_limit,
        write_bundle,
    )

__all__ = [
    "INIT_FILES",
    "NOFILE_LIMIT",
    "PLACEHOLDERS",
    "DeviceRequest",
    "ResolvedUser",
    "RunOptions",
    "SecurityOptions",
    "Volume",
    "build_spec",
    "exec_process",
    "make_placeholders",
    "nofile_limit",
    "parse_env_option",
    "prepare_workdir",
    "process_args",
    "resolve_user",
    "resolve_user_in",
    "working_dir",
    "write_bundle",
    "write_init_files",
]

_HOME = {
    "INIT_FILES": "spec",
    "NOFILE_LIMIT": "spec",
    "RunOptions": "spec",
    "Volume": "spec",
    "build_spec": "spec",
    "exec_process": "spec",
    "parse_env_option": "spec",
    "process_args": "spec",
    "working_dir": "spec",
    "ResolvedUser": "users",
    "prepare_workdir": "users",
    "resolve_user": "users",
    "resolve_user_in": "users",
    "PLACEHOLDERS": "initlayer",
    "make_placeholders": "initlayer",
    "write_init_files": "initlayer",
    "nofile_limit": "writer",
    "write_bundle": "writer",
    "DeviceRequest": "security.devices",
    "SecurityOptions": "security.options",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
