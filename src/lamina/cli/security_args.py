"""The confinement options of ``lamina run`` and ``lamina exec`` (one argument group,
so that the other option groups of those commands stay apart), and their reading
into :class:`lamina.runtime.bundle.security.SecurityOptions`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from lamina.cli.main import _Arguments
    from lamina.runtime.bundle.security.options import SecurityOptions


def add_run_arguments(p: _Arguments) -> None:
    # argparse's group; the parsers main.py does not build have none
    make_group = getattr(p, "add_argument_group", None)
    group = make_group("security") if make_group is not None else p
    group.add_argument(
        "--security-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="seccomp=unconfined|FILE, no-new-privileges (repeat)",
    )
    group.add_argument(
        "--cap-add", action="append", default=[], metavar="CAP", help="add a capability, or ALL"
    )
    group.add_argument(
        "--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability, or ALL"
    )
    group.add_argument(
        "--privileged",
        action="store_true",
        help="every capability and host device, no seccomp, writable /sys",
    )
    group.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="HOST[:CTR[:PERMS]]",
        help="give the container a host device (PERMS: rwm)",
    )


def add_exec_arguments(p: _Arguments) -> None:
    p.add_argument("--privileged", action="store_true", help="every capability for this process")


def security_options(args: argparse.Namespace) -> SecurityOptions:
    from lamina.runtime.bundle.security.devices import DeviceRequest
    from lamina.runtime.bundle.security.options import SecurityOptions

    base = SecurityOptions(
        cap_add=tuple(args.cap_add),
        cap_drop=tuple(args.cap_drop),
        privileged=args.privileged,
        devices=tuple(DeviceRequest.parse(d) for d in args.device),
    )
    return base.with_security_opts(args.security_opt, cwd=os.getcwd())
