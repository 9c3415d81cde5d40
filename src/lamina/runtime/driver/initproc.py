"""Finding the init that ``run --init`` binds into the container as PID 1."""

from __future__ import annotations

import shutil

from lamina.errors import ToolError

# catatonit (podman's), then tini-static (Docker's docker-init is tini): Debian
# packages and static, so they run in any image, even one without a libc.
INIT_CANDIDATES = ("catatonit", "tini-static")


def find_init() -> str:
    """The host path of an init binary for ``--init``."""
    for name in INIT_CANDIDATES:
        path = shutil.which(name) or shutil.which(name, path="/usr/libexec/podman")
        if path is not None:
            return path
    raise ToolError(
        "--init needs an init binary, and none is installed",
        hint="install the Debian package catatonit (or tini-static)",
    )
