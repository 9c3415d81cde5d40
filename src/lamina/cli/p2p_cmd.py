"""``lamina p2p peer|scheduler|get|status``: P2P distribution of blobs (docs/p2p.md)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from lamina.errors import DigestMismatch, InvalidArgument, LaminaError, NotFound

if TYPE_CHECKING:
    from lamina.cli.main import Parsers


def add_parsers(sub: Parsers) -> None:
    p = sub.add_parser("p2p", help="P2P distribution: scheduler, peers (registry mirrors)")
    actions = p.add_subparsers(dest="p2p_action", metavar="ACTION", required=True)

    s = actions.add_parser(
        "peer",
        help="run a peer: a registry mirror that fetches blobs from the swarm",
        description="One HTTP server on --addr: the registry mirror (point containerd, "
        "skopeo, podman or `lamina pull --mirror` at it), the piece server other peers "
        "fetch from, and /metrics. Without --scheduler it is a plain pull-through mirror.",
    )
    s.add_argument("--addr", default="127.0.0.1:4001", help="HOST:PORT to listen on")
    s.add_argument("--scheduler", default=None, metavar="URL", help="the scheduler's URL")
    s.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="URL",
        help="the upstream registry (the first is the default; more are chosen by "
        "containerd's ?ns=)",
    )
    s.add_argument("--cache", required=True, metavar="DIR", help="the piece and blob cache")
    s.add_argument("--swarm-key", default=None, metavar="FILE", help="the swarm's secret key")
    s.add_argument("--seed", action="store_true", help="a seed peer (asked to fetch first)")
    s.add_argument("--upload-limit", default=None, metavar="RATE", help="e.g. 50Mbit")
    s.add_argument("--download-limit", default=None, metavar="RATE", help="e.g. 200Mbit")
    s.add_argument("--cache-size", default=None, metavar="SIZE", help="e.g. 20GiB")
    s.add_argument("--rack", default="", metavar="LABEL", help="affinity label (idc|rack)")
    s.add_argument("--host-id", default="", help="this peer's id (default: host:port)")
    s.add_argument(
        "--advertise", default=None, metavar="URL", help="the URL other peers reach it at"
    )

    s = actions.add_parser("scheduler", help="run the swarm's scheduler")
    s.add_argument("--addr", default="127.0.0.1:4000", help="HOST:PORT to listen on")
    s.add_argument("--swarm-key", required=True, metavar="FILE", help="the swarm's secret key")
    s.add_argument("--redis", default=None, metavar="URL", help="keep state in Redis")
    s.add_argument(
        "--back-to-source-limit",
        type=int,
        default=1,
        metavar="N",
        help="peers of a task fetching from the origin at once (1-3, default 1)",
    )

    s = actions.add_parser(
        "get",
        help="fetch one blob through a peer, verified (like dfget)",
        description="TARGET is a blob URL (https://REGISTRY/v2/NAME/blobs/sha256:...) or "
        "NAME@sha256:... of the peer's default upstream.",
    )
    s.add_argument("target", metavar="URL|NAME@DIGEST")
    s.add_argument("-o", "--output", required=True, metavar="FILE")
    s.add_argument(
        "--peer", default=os.environ.get("LAMINA_P2P_PEER", "http://127.0.0.1:4001"),
        help="the peer's URL (default: $LAMINA_P2P_PEER or http://127.0.0.1:4001)",
    )  # fmt: skip
    s.add_argument("--authfile", default=None, help="credentials file (as for pull)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = actions.add_parser("status", help="peers, tasks, pieces and bytes of a swarm")
    s.add_argument(
        "--scheduler", default=os.environ.get("LAMINA_P2P_SCHEDULER", "http://127.0.0.1:4000"),
        help="the scheduler's URL (default: $LAMINA_P2P_SCHEDULER or http://127.0.0.1:4000)",
    )  # fmt: skip
    s.add_argument("--swarm-key", default=None, metavar="FILE", help="the swarm's secret key")
    s.add_argument("--json", action="store_true", help="print machine-readable JSON")


def cmd_p2p(args: argparse.Namespace) -> int:
    action = args.p2p_action
    if action == "peer":
        return _peer(args)
    if action == "scheduler":
        return _scheduler(args)
    if action == "get":
        return _get(args)
    return _status(args)


def _read_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    from lamina.p2p.tokens import check_key

    try:
        return check_key(Path(path).read_bytes())
    except OSError as exc:
        raise InvalidArgument(
            f"cannot read the swarm key {path}: {exc.strerror}",
            hint="make one with: head -c 32 /dev/urandom > swarm.key",
        ) from exc


def _ready(url: str) -> None:
    sys.stderr.write(f"listening on {url}\n")
    sys.stderr.flush()


def _logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _peer(args: argparse.Namespace) -> int:
    from lamina.p2p.daemon.serve import PeerConfig, run_peer

    if args.scheduler and not args.swarm_key:
        raise InvalidArgument(
            "a peer that joins a scheduler needs the swarm key",
            hint="give --swarm-key FILE (the same file as the scheduler's)",
        )
    _logging()
    config = PeerConfig(
        addr=args.addr,
        upstream=args.upstream[0],
        other_upstreams=tuple(args.upstream[1:]),
        cache=Path(args.cache),
        scheduler=args.scheduler,
        swarm_key=_read_key(args.swarm_key),
        seed=args.seed,
        upload_limit=args.upload_limit,
        download_limit=args.download_limit,
        cache_size=args.cache_size,
        rack=args.rack,
        host_id=args.host_id,
        advertise=args.advertise,
    )
    run_peer(config, ready=_ready)
    return 0


def _scheduler(args: argparse.Namespace) -> int:
    from lamina.p2p.service.serve import run_scheduler

    if not 1 <= args.back_to_source_limit <= 3:
        raise InvalidArgument(
            f"--back-to-source-limit {args.back_to_source_limit} is out of range",
            hint="use 1 to 3",
        )
    key = _read_key(args.swarm_key)
    assert key is not None
    _logging()
    # it logs "scheduler listening on URL" once it accepts
    run_scheduler(
        args.addr, key, redis_url=args.redis, back_to_source_limit=args.back_to_source_limit
    )
    return 0


# -- get ---------------------------------------------------------------------------------


def _target(text: str) -> tuple[str | None, str, str]:
    """``(registry host or None, repository, digest)`` of a blob URL or NAME@DIGEST."""
    if "://" in text:
        parts = urlsplit(text)
        path = parts.path
        if not path.startswith("/v2/") or "/blobs/" not in path:
            raise InvalidArgument(
                f"{text!r} is not a blob URL",
                hint="give https://REGISTRY/v2/NAME/blobs/sha256:HEX or NAME@sha256:HEX",
            )
        name, _, digest = path[len("/v2/") :].rpartition("/blobs/")
        return parts.netloc, name, digest
    name, sep, digest = text.rpartition("@")
    if not sep or not name:
        raise InvalidArgument(f"{text!r} names no blob", hint="give NAME@sha256:HEX or a blob URL")
    return None, name, digest


def _get(args: argparse.Namespace) -> int:
    from lamina.cli.remote_cmd import _run
    from lamina.oci.digest import Digest

    registry, name, digest_text = _target(args.target)
    digest = Digest.parse(digest_text)
    return _run(_fetch(args, registry, name, str(digest)))


async def _fetch(args: argparse.Namespace, registry: str | None, name: str, digest: str) -> int:
    from lamina.cli.mirrors import mirror_host
    from lamina.registry.challenges import Scope
    from lamina.registry.client.credentials import load_credentials, normalize_host
    from lamina.registry.client.transport import Transport

    host, plain = mirror_host(args.peer)

    def lookup(target: str) -> Any:
        # the peer hands the registry's credentials to that registry only
        wanted = registry if normalize_host(target) == host and registry else target
        return load_credentials(wanted, args.authfile)

    url = f"{'http' if plain else 'https'}://{host}/v2/{name}/blobs/{digest}"
    if registry:
        url += f"?ns={quote(registry, safe=':')}"
    out = Path(args.output)
    partial = out.with_name(f".{out.name}.partial")
    hasher = hashlib.new(digest.split(":", 1)[0])
    async with Transport(lookup, insecure=plain) as transport:
        await transport.prepare(host)
        scopes = (Scope(name, ("pull",)),)
        async with transport.request(
            "GET", url, registry=host, scopes=scopes, what=f"blob {digest}"
        ) as resp:
            total = resp.content_length
            try:
                with open(partial, "wb") as f, _bar(total, args.quiet) as advance:
                    async for chunk, _ in resp.content.iter_chunks():
                        f.write(chunk)
                        hasher.update(chunk)
                        advance(len(chunk))
                got = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
                if got != digest:
                    raise DigestMismatch(
                        f"the peer sent {got} for {digest}",
                        hint="nothing was kept; try again, or another peer",
                    )
                os.replace(partial, out)
            finally:
                if partial.exists():
                    partial.unlink()
    if not args.quiet:
        sys.stderr.write(f"{digest} -> {out}\n")
    return 0


class _NoBar:
    def __enter__(self) -> Any:
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None


def _bar(total: int | None, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    from contextlib import contextmanager

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    @contextmanager
    def bar() -> Any:
        with Progress(
            BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=Console(stderr=True)
        ) as progress:
            task = progress.add_task("get", total=total)
            yield lambda n: progress.update(task, advance=n)

    return bar()


# -- status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from lamina.cli.output import human_size, print_json

    key = _read_key(args.swarm_key)
    doc = asyncio.run(_fetch_status(args.scheduler.rstrip("/"), key))
    if args.json:
        print_json(doc)
        return 0
    hosts = doc.get("hosts") or []
    tasks = doc.get("tasks") or []
    out = sys.stdout
    out.write(f"{len(hosts)} peer(s), {len(tasks)} task(s)\n")
    for h in hosts:
        if isinstance(h, dict):
            seed = " seed" if h.get("seed") else ""
            out.write(f"  peer {h.get('host_id', '?')} {h.get('addr', '')}{seed}\n")
    for t in tasks:
        if not isinstance(t, dict):
            continue
        src = int(t.get("bytes_from_source") or 0)
        peers = int(t.get("bytes_from_peers") or 0)
        out.write(
            f"  task {str(t.get('task', '?'))[:19]} {t.get('state', '?')} "
            f"size {human_size(int(t.get('size') or 0))} pieces {t.get('pieces', '?')} "
            f"peers {len(t.get('peers') or [])} from source {human_size(src)} "
            f"from peers {human_size(peers)}\n"
        )
    return 0


async def _fetch_status(base: str, key: bytes | None) -> dict[str, Any]:
    from lamina.http.errors import network_errors
    from lamina.http.session import new_session

    headers = {}
    if key is not None:
        from lamina.p2p.tokens import join_token

        headers["Authorization"] = f"Bearer {join_token(key)}"
    async with new_session(connections=2, read_timeout=30) as session:
        try:
            async with session.get(f"{base}/v1/status", headers=headers) as resp:
                body = await resp.content.read(16 << 20)
                if resp.status == 401:
                    raise InvalidArgument(
                        f"{base} refused the status request (401)",
                        hint="give --swarm-key FILE",
                    )
                if resp.status == 404:
                    raise NotFound(f"{base} has no /v1/status: is it a lamina p2p scheduler?")
                if resp.status != 200:
                    raise LaminaError(f"{base}/v1/status answered {resp.status}")
        except network_errors() as exc:
            raise LaminaError(
                f"cannot reach the scheduler at {base}: {exc}",
                hint="is `lamina p2p scheduler` running there? (--scheduler URL)",
            ) from exc
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise LaminaError(f"{base}/v1/status sent no JSON") from exc
    if not isinstance(doc, dict):
        raise LaminaError(f"{base}/v1/status sent no JSON object")
    return doc
