"""Arguments of ``lamina registry serve|passwd|gc``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.cli.main import Parsers


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("registry", help="run an OCI registry, or collect its garbage")
    actions = p.add_subparsers(dest="registry_action", metavar="ACTION", required=True)
    s = actions.add_parser(
        "serve",
        help="serve the OCI Distribution API",
        description="Serve the OCI Distribution API at /v2/ and Prometheus metrics at "
        "/metrics. With auth on (--htpasswd, --token-key) /metrics asks for credentials "
        "like the catalog does (token scope registry:catalog:*). At start-up, temporary "
        "files older than an hour that a killed server left are removed.",
    )
    s.add_argument("--addr", default="127.0.0.1:5000", help="HOST:PORT to listen on")
    s.add_argument("--storage", default=None, help="DIR or s3://BUCKET/PREFIX?endpoint=URL")
    s.add_argument("--htpasswd", default=None, help="htpasswd file (bcrypt) for basic auth")
    s.add_argument("--token-key", default=None, help="private key for the built-in token issuer")
    s.add_argument("--tls-cert", default=None, help="TLS certificate (PEM)")
    s.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    s.add_argument("--realm", default=None, help="auth realm (token auth: the issuer's URL)")
    s.add_argument("--service", default="lamina-registry", help="token auth service name")
    s.add_argument("--acl", default=None, help="JSON access policy file")
    s.add_argument("--anonymous-pull", action="store_true", help="let anyone pull")
    s.add_argument(
        "--no-metrics",
        action="store_true",
        help="do not serve /metrics (Prometheus text; with auth on it needs the same "
        "credentials as the catalog, scope registry:catalog:*)",
    )
    s.add_argument(
        "--upload-ttl",
        type=float,
        default=24 * 3600.0,
        help="seconds an idle upload session lives (default: a day)",
    )
    _add_limits(s)
    w = actions.add_parser("passwd", help="add, change or delete a user in an htpasswd file")
    w.add_argument("file", metavar="FILE", help="the htpasswd file (created if missing)")
    w.add_argument("user", metavar="USER")
    w.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    w.add_argument("-D", "--delete", action="store_true", help="remove the user")
    g = actions.add_parser(
        "gc",
        help="delete blobs no manifest or tag needs, and temporaries killed writers left",
    )
    g.add_argument("--storage", default=None, help="DIR or s3://BUCKET/PREFIX?endpoint=URL")
    g.add_argument("--dry-run", action="store_true", help="report only")
    g.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        help="keep unreferenced blobs and temporary files younger than this many seconds "
        "(default: an hour)",
    )
    g.add_argument(
        "--delete-untagged",
        action="store_true",
        help="also delete manifests no tag reaches (and then their blobs)",
    )
    g.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_limits(s: argparse.ArgumentParser) -> None:
    """What one client may hold of the server (``registry.server.limits.Limits``)."""
    for flag, default, what in (
        ("--header-timeout", 20.0, "seconds a request head may take to arrive whole"),
        ("--keepalive-timeout", 60.0, "seconds an idle keep-alive connection stays open"),
        ("--idle-timeout", 60.0, "seconds a body read or answer write may make no progress"),
    ):
        s.add_argument(flag, type=float, default=default, help=f"{what} (default: {default:g})")
    s.add_argument(
        "--max-connections", type=int, default=8192,
        help="open connections; more get 503 + Retry-After (default: 8192)",
    )  # fmt: skip
    s.add_argument(
        "--max-uploads-per-client", type=int, default=32,
        help="concurrent upload bodies per client address; more get 429 (default: 32)",
    )  # fmt: skip
