"""Arguments of ``lamina push|pull|login|logout``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.cli.main import Parsers


def _transport(p: Any) -> None:
    add = p.add_argument
    add(
        "--insecure",
        action="store_true",
        help="TLS without verification, or plain HTTP (the default for localhost)",
    )
    add(
        "--authfile",
        default=None,
        help="credentials file (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, "
        "~/.docker/config.json)",
    )


def _transfer(p: Any) -> None:
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="blobs transferred at once (default: 6 for pull, 4 for push)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("push", help="push an image to a registry")
    p.add_argument("ref", metavar="REF", help="the local image (name, ID or digest)")
    p.add_argument(
        "dest", nargs="?", default=None, metavar="DEST", help="where to push (default: REF)"
    )
    _transport(p)
    _transfer(p)

    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref", metavar="REF", help="name[:tag] or name@digest")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: host)")
    p.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a registry mirror (a lamina p2p peer) to try first; repeatable, tried in "
        "order, then mirrors.json, then the registry itself",
    )
    _transport(p)
    _transfer(p)

    p = sub.add_parser("login", help="check and save credentials for a registry")
    p.add_argument("server", metavar="SERVER")
    p.add_argument("-u", "--username", default=None)
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _transport(p)

    p = sub.add_parser("logout", help="forget the credentials for a registry")
    p.add_argument("server", metavar="SERVER")
    _transport(p)
