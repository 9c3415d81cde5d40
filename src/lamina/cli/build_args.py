"""Arguments of ``lamina build``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.cli.main import Parsers


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("build", help="build an image from a Containerfile")
    p.add_argument("-t", "--tag", dest="tags", action="append", default=[], help="name (repeat)")
    p.add_argument("-f", "--file", default=None, help="Containerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], help="set a build ARG: K=V")
    p.add_argument("--target", default=None, help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument(
        "--secret", action="append", default=[], help="id=ID,src=FILE for RUN --mount=type=secret"
    )
    p.add_argument("--progress", choices=["auto", "plain", "json", "quiet"], default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--label", action="append", default=[], help="add a label K=V to the image")
    p.add_argument("--iidfile", default=None, help="write the image ID to this file")
    p.add_argument(
        "--network",
        choices=["bridge", "host", "none"],
        default="bridge",
        help="the network of RUN steps (default bridge: private, NAT out; RUN --network overrides)",
    )
    p.add_argument(
        "--jobs", type=int, default=2, help="stages built at once when independent (default 2)"
    )
    p.add_argument("context", metavar="CONTEXT", help="the build context directory")
