"""The ``lamina`` command: parse, pick the command module, run it, turn errors into exits.

Start-up time is a feature (``lamina run`` must add little over bare runc), so this
module imports only argparse and the error taxonomy; each command's module, and the
library behind it, is imported when that command runs.
"""

from __future__ import annotations

import importlib
import os
import sys

from lamina.errors import LaminaError

TYPE_CHECKING = False  # not typing's: `lamina run` must not pay for importing typing
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

# command -> (module in lamina.cli, function); the function takes the parsed namespace
# and returns the exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("images_cmd", "cmd_import"),
    "images": ("images_cmd", "cmd_images"),
    "inspect": ("images_cmd", "cmd_inspect"),
    "history": ("images_cmd", "cmd_history"),
    "tag": ("images_cmd", "cmd_tag"),
    "rmi": ("images_cmd", "cmd_rmi"),
    "prune": ("images_cmd", "cmd_prune"),
    "builder": ("images_cmd", "cmd_builder"),
    "save": ("transfer_cmd", "cmd_save"),
    "load": ("transfer_cmd", "cmd_load"),
    "unpack": ("transfer_cmd", "cmd_unpack"),
    "bootstrap": ("transfer_cmd", "cmd_bootstrap"),
    "run": ("container_cmd", "cmd_run"),
    "ps": ("container_cmd", "cmd_ps"),
    "logs": ("container_cmd", "cmd_logs"),
    "stop": ("container_cmd", "cmd_stop"),
    "kill": ("container_cmd", "cmd_kill"),
    "rm": ("container_cmd", "cmd_rm"),
    "exec": ("container_cmd", "cmd_exec"),
    "diff": ("container_cmd", "cmd_diff"),
    "commit": ("container_cmd", "cmd_commit"),
    "mount": ("container_cmd", "cmd_mount"),
    "umount": ("container_cmd", "cmd_umount"),
    "build": ("build_cmd", "cmd_build"),
    "network": ("network_cmd", "cmd_network"),
    "port": ("network_cmd", "cmd_port"),
    "registry": ("registry_cmd", "cmd_registry"),
    "p2p": ("p2p_cmd", "cmd_p2p"),
    "push": ("remote_cmd", "cmd_push"),
    "pull": ("remote_cmd", "cmd_pull"),
    "login": ("remote_cmd", "cmd_login"),
    "logout": ("remote_cmd", "cmd_logout"),
}

# Modules (in lamina.cli) whose ``add_parsers(sub)`` define the parsers of the commands
# above that are not built here; each is imported only when one of its commands runs
# (or when every parser is built, for --help).
ARG_MODULES: dict[str, str] = {
    "build": "build_args",
    "network": "network_cmd",
    "port": "network_cmd",
    "registry": "registry_args",
    "p2p": "p2p_cmd",
    "push": "remote_args",
    "pull": "remote_args",
    "login": "remote_args",
    "logout": "remote_args",
}


if TYPE_CHECKING:

    class _Arguments(Protocol):
        def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...

    class Parsers(Protocol):
        """What an ``ARG_MODULES`` module's ``add_parsers(sub)`` receives: ``add_parser``
        returns an argparse parser (or a stand-in taking the same calls, including
        ``add_subparsers`` for nested commands)."""

        def add_parser(self, name: str, **kwargs: Any) -> Any: ...


class _Unbuilt:
    """Stands in for the parser of a command that is not being run: building all 22
    sub-parsers costs more than a warm ``lamina run`` may spend on parsing."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_subparsers(self, **kwargs: Any) -> _Unbuilt:
        return self

    def add_parser(self, name: str, **kwargs: Any) -> _Unbuilt:
        return self

    def set_defaults(self, **kwargs: Any) -> None:
        return None


class _Subcommands:
    """``add_parser`` that builds only the ``only`` command's parser (all when None)."""

    def __init__(
        self, sub: argparse._SubParsersAction[argparse.ArgumentParser], only: str | None
    ) -> None:
        self._sub = sub
        self._only = only

    def add_parser(self, name: str, **kwargs: Any) -> _Arguments:
        if self._only is not None and name != self._only:
            return _Unbuilt()
        return self._sub.add_parser(name, **kwargs)


def _add_json(p: _Arguments) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _chosen_verb(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` if the global options before it are plain
    (``--root DIR``, ``--root=DIR``); None (build every parser) for anything else:
    ``--help``, ``--version``, abbreviations, unknown commands, errors."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--root":
            i += 2
        elif token.startswith("--root="):
            i += 1
        else:
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that command's sub-parser is built
    (same usage, help and errors for it, and faster)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lamina",
        description="A daemonless container-image toolkit.",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="state directory (default: $LAMINA_ROOT, /var/lib/lamina for root, "
        "else $XDG_DATA_HOME/lamina)",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = _Subcommands(parser.add_subparsers(dest="verb", metavar="COMMAND"), only)

    p = sub.add_parser("import", help="import a rootfs directory or tarball as an image")
    p.add_argument("source", help="a directory, or a tar file (plain, gzip or zstd); - for stdin")
    p.add_argument("-t", "--tag", dest="ref", required=True, help="name of the new image")
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, ...)",
    )
    p.add_argument("-m", "--message", default=None, help="history comment")
    p.add_argument("--platform", default=None, help="os/arch of the image (default: host)")
    p.add_argument(
        "--compression", choices=["gzip", "zstd", "none"], default="gzip", help="layer compression"
    )
    _add_json(p)

    p = sub.add_parser("images", help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    p.add_argument("--digests", action="store_true", help="show manifest digests")
    _add_json(p)

    p = sub.add_parser("inspect", help="show an image's manifest and config")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--raw", choices=["manifest", "config"], default=None, help="print one document")

    p = sub.add_parser("history", help="show an image's history")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    _add_json(p)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET")

    p = sub.add_parser("rmi", help="remove image names (and blobs no name needs, with prune)")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove every name of an image ID; untag an image containers use",
    )
    _add_json(p)

    p = sub.add_parser("prune", help="delete what no image, container or build needs")
    p.add_argument("--dry-run", action="store_true", help="report only")
    p.add_argument(
        "--build-cache", action="store_true", help="drop the build cache too (default: keep it)"
    )
    _add_json(p)

    builder: Any = sub.add_parser("builder", help="manage the build cache")
    actions = builder.add_subparsers(dest="builder_action", metavar="ACTION", required=True)
    b = actions.add_parser("prune", help="drop the build cache and the blobs only it names")
    b.add_argument("--dry-run", action="store_true", help="report only")
    _add_json(b)

    p = sub.add_parser("save", help="write images to an OCI layout or a docker-archive tar")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("-o", "--output", required=True, help="destination path (- for stdout)")
    p.add_argument(
        "--format",
        choices=["oci", "oci-dir", "docker", "docker-legacy"],
        default="docker",
        help="oci: OCI layout tar; oci-dir: OCI layout directory; docker: docker save tar "
        "(also an OCI layout); docker-legacy: the pre-25 docker save layout",
    )

    p = sub.add_parser("load", help="load images from an OCI layout or a docker-archive tar")
    p.add_argument("-i", "--input", required=True, help="tar file, OCI layout directory, or -")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress progress")
    p.add_argument(
        "--name",
        default=None,
        help="repository for OCI layout entries that carry only a tag (e.g. myapp)",
    )
    _add_json(p)

    p = sub.add_parser("unpack", help="unpack an image's layers into a plain directory")
    p.add_argument("ref", metavar="REF")
    p.add_argument("dest", metavar="DIR")
    _add_json(p)

    p = sub.add_parser("bootstrap", help="make a base image without a registry")
    p.add_argument(
        "kind",
        choices=["busybox", "debian"],
        help="busybox: from the host's busybox-static; debian: debootstrap from the apt mirror",
    )
    p.add_argument("-t", "--tag", dest="ref", required=True, help="name of the new image")
    p.add_argument("--suite", default="bookworm", help="debian: the release to bootstrap")
    p.add_argument("--variant", default="minbase", help="debian: debootstrap --variant")
    p.add_argument("--mirror", default=None, help="debian: mirror URL (default: apt's own)")
    p.add_argument(
        "--include", default=None, help="debian: extra packages, comma-separated (e.g. gcc)"
    )
    _add_json(p)

    _container_parsers(sub)
    for module_name in sorted({m for v, m in ARG_MODULES.items() if only in (None, v)}):
        importlib.import_module(f"lamina.cli.{module_name}").add_parsers(sub)
    return parser


def _container_parsers(sub: _Subcommands) -> None:
    import argparse

    from lamina.cli import security_args

    p = sub.add_parser("run", help="run a command in a new container")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-e", "--env", action="append", default=[], help="set NAME=value")
    p.add_argument("-w", "--workdir", default=None, help="working directory inside")
    p.add_argument("-u", "--user", default=None, help="user[:group], names or ids")
    p.add_argument("--entrypoint", default=None, help="replace the image's ENTRYPOINT")
    p.add_argument("--hostname", default=None, help="container host name")
    if not isinstance(p, _Unbuilt):  # the network options live with the run command
        importlib.import_module("lamina.cli.container_cmd").add_network_options(p)
        importlib.import_module("lamina.cli.container_cmd").add_limit_options(p)
        importlib.import_module("lamina.cli.container_cmd").add_init_options(p)
    p.add_argument("-v", "--volume", action="append", default=[], help="HOST:CTR[:ro]")
    p.add_argument("--read-only", action="store_true", help="mount the root read-only")
    p.add_argument("--name", default=None, help="container name")
    p.add_argument("--runtime", choices=["runc", "crun"], default="runc")
    security_args.add_run_arguments(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="also stopped ones")
    p.add_argument("-q", "--quiet", action="store_true", help="IDs only")
    _add_json(p)

    p = sub.add_parser("logs", help="show a container's output")
    p.add_argument("-f", "--follow", action="store_true", help="follow new output")
    p.add_argument("container", metavar="CONTAINER")

    p = sub.add_parser("stop", help="stop containers (signal, then SIGKILL)")
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds before SIGKILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("kill", help="send a signal to containers")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running one first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user", default=None)
    p.add_argument("-w", "--workdir", default=None)
    security_args.add_exec_arguments(p)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    p = sub.add_parser("diff", help="files a container added (A), changed (C), deleted (D)")
    p.add_argument("container", metavar="CONTAINER")
    _add_json(p)

    p = sub.add_parser("commit", help="make an image from a container's changes")
    p.add_argument("-m", "--message", default=None)
    p.add_argument("-a", "--author", default=None)
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ref", nargs="?", default=None, metavar="REF")

    p = sub.add_parser("mount", help="mount a container's root filesystem, print its path")
    p.add_argument("container", metavar="CONTAINER")

    p = sub.add_parser("umount", help="unmount a stopped container's root filesystem")
    p.add_argument("container", metavar="CONTAINER")


def _load(command: str) -> Callable[[argparse.Namespace], int]:
    module_name, func_name = COMMANDS[command]
    module = importlib.import_module(f"lamina.cli.{module_name}")
    func: Callable[[argparse.Namespace], int] = getattr(module, func_name)
    return func


def _fast_run(argv: Sequence[str]) -> int | None:
    """``lamina run [--rm] [--name N] [--network bridge|host]
    [--security-opt seccomp=unconfined] IMAGE [CMD...]`` from a cached run plan (see
    lamina.runtime.plans.replay), without argparse or the full run path; None when the
    command line asks for more, or no valid plan exists."""
    root = None
    i = 0
    while i < len(argv) and argv[i].startswith("--root"):
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif argv[i].startswith("--root="):
            root, i = argv[i][len("--root=") :], i + 1
        else:
            return None
    if i >= len(argv) or argv[i] != "run":
        return None
    i += 1
    rm, name, variant, network = False, None, "", None
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "--rm" and not rm:
            rm, i = True, i + 1
        elif argv[i] == "--security-opt" and i + 1 < len(argv) and not variant:
            if argv[i + 1] != "seccomp=unconfined":
                return None
            variant, i = "unconfined", i + 2
        elif argv[i] == "--network" and network is None and i + 1 < len(argv):
            network, i = argv[i + 1], i + 2
        elif argv[i].startswith("--network=") and network is None:
            network, i = argv[i][len("--network=") :], i + 1
        elif argv[i] == "--name" and name is None and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
        elif argv[i].startswith("--name=") and name is None:
            name, i = argv[i][len("--name=") :], i + 1
        else:
            return None
    if i >= len(argv) or not argv[i] or network not in (None, "bridge", "host"):
        return None
    from lamina.runtime.plans.replay import try_run
    from lamina.sysinfo import default_root

    return try_run(
        root or default_root(),
        argv[i],
        argv[i + 1 :],
        rm=rm,
        name=name,
        variant=variant,
        network=network or "bridge",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _guarded(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    if argv is None:
        code = _fast_run(sys.argv[1:])
        if code is not None:
            return code
    parser = build_parser(_chosen_verb(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.version:
        from lamina import __version__

        print(f"lamina {__version__}")
        return 0
    if not args.verb:
        parser.print_help(sys.stderr)
        return 4
    return _load(args.verb)(args)


def _guarded(body: Callable[[], int]) -> int:
    """Run ``body``; lamina errors become one line, a hint and the error's exit code."""
    try:
        return body()
    except LaminaError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `lamina images | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
