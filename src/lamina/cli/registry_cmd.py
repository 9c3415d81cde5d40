"""``lamina registry serve|gc``: run the OCI registry, or collect its garbage."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.registry.authn.api import Authenticator


def _storage(args: argparse.Namespace) -> str:
    if args.storage:
        return str(args.storage)
    from lamina.sysinfo import default_root

    return os.path.join(args.root or default_root(), "registry")


def cmd_registry(args: argparse.Namespace) -> int:
    if args.registry_action == "serve":
        return _serve(args)
    if args.registry_action == "passwd":
        return _passwd(args)
    return _gc(args)


def _passwd(args: argparse.Namespace) -> int:
    """Add, change or remove one user of an htpasswd file (bcrypt), like
    ``htpasswd -B`` / ``htpasswd -D``, without needing apache2-utils."""
    from lamina.errors import InvalidArgument
    from lamina.registry.authn.htpasswd import set_password

    if args.delete:
        if not set_password(args.file, args.user, None):
            raise InvalidArgument(f"{args.user!r} is not in {args.file}")
        sys.stderr.write(f"Deleted user {args.user}\n")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"Password for {args.user}: ")
        if getpass.getpass("Again: ") != password:
            raise InvalidArgument("the passwords differ", hint="type the same password twice")
    if not password:
        raise InvalidArgument("empty password", hint="give a password")
    existed = set_password(args.file, args.user, password)
    sys.stderr.write(f"{'Updated' if existed else 'Added'} user {args.user}\n")
    return 0


def _authenticator(args: argparse.Namespace, host: str, port: int) -> Authenticator | None:
    if not (args.htpasswd or args.token_key or args.acl or args.anonymous_pull):
        return None  # an open registry: skip importing bcrypt, jwt and cryptography
    from lamina.registry.authn import open_authenticator

    if args.token_key and not args.realm and (port == 0 or host in ("0.0.0.0", "::")):
        from lamina.errors import InvalidArgument

        raise InvalidArgument(
            f"token auth needs the URL clients fetch tokens from; {host}:{port} is not one",
            hint="give --realm https://HOST:PORT/token (or listen on a fixed HOST:PORT)",
        )
    scheme = "https" if args.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    realm = args.realm or (
        f"{scheme}://{shown}:{port}/token" if args.token_key else "lamina registry"
    )
    return open_authenticator(
        htpasswd=args.htpasswd,
        token_key=args.token_key,
        realm=realm,
        service=args.service,
        acl=args.acl,
        anonymous_pull=args.anonymous_pull,
    )


def _serve(args: argparse.Namespace) -> int:
    from lamina.registry.server import parse_addr, serve
    from lamina.registry.server.limits import Limits

    host, port = parse_addr(args.addr)
    authenticator = _authenticator(args, host, port)

    def ready(url: str) -> None:
        sys.stderr.write(f"listening on {url}\n")
        sys.stderr.flush()

    serve(
        args.addr,
        _storage(args),
        authenticator=authenticator,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        metrics=not args.no_metrics,
        upload_ttl=args.upload_ttl,
        limits=Limits(
            header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            max_uploads_per_client=args.max_uploads_per_client,
        ),
        ready=ready,
    )
    return 0


def _gc(args: argparse.Namespace) -> int:
    from lamina.cli.output import human_size, print_json
    from lamina.registry.gc import collect
    from lamina.registry.storage import open_storage

    report = collect(
        open_storage(_storage(args)),
        dry_run=args.dry_run,
        grace_seconds=args.grace,
        delete_untagged=args.delete_untagged,
    )
    if args.json:
        print_json(report.to_json())
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    line = (
        f"{verb} {len(report.deleted_blobs)} blob(s), {human_size(report.freed_bytes)}; "
        f"kept {report.kept_blobs} ({report.young_blobs} unreferenced but younger than "
        f"{args.grace:g}s)"
    )
    if report.deleted_manifests:
        line += f"; {verb} {len(report.deleted_manifests)} untagged manifest(s)"
    if report.swept_temporaries:
        swept = "would remove" if args.dry_run else "removed"
        line += f"; {swept} {len(report.swept_temporaries)} stale temporary file(s)"
    sys.stdout.write(line + "\n")
    return 0
