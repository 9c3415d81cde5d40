"""``lamina push``, ``pull``, ``login``, ``logout``: the registry client's commands."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from lamina.cli.output import open_store, print_json
from lamina.errors import InvalidArgument, InvalidReference
from lamina.oci.descriptor import Descriptor
from lamina.oci.reference import Reference

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from lamina.image.api import TransferProgress
    from lamina.registry.client.credentials import Credentials
    from lamina.registry.client.remote import RegistryClient

T = TypeVar("T")

_VERBS = {
    "exists": "Already exists",
    "mounted": "Mounted",
    "uploaded": "Pushed",
    "fetched": "Pull complete",
}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _client(args: argparse.Namespace, creds: Credentials | None = None) -> RegistryClient:
    from lamina.registry.client.credentials import load_credentials, normalize_host
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport

    authfile = getattr(args, "authfile", None)

    def lookup(registry: str) -> Credentials | None:
        if creds is not None and normalize_host(registry) == normalize_host(args.server):
            return creds
        return load_credentials(registry, authfile)

    connections = max(8, 2 * (getattr(args, "parallel", None) or 6))
    return RegistryClient(Transport(lookup, insecure=args.insecure, connections=connections))


def _pull_source(args: argparse.Namespace, ref: Reference) -> Any:
    """The registry client, or (with ``--mirror`` or mirrors.json) the mirrors in
    order, then the registry (``cli/mirrors.py``)."""
    from lamina.cli.mirrors import configured_mirrors, mirrored_fetcher

    urls = list(getattr(args, "mirror", None) or []) + configured_mirrors(ref.registry)
    direct = _client(args)
    if not urls:
        return direct
    from lamina.registry.client.credentials import load_credentials, normalize_host
    from lamina.registry.client.remote import RegistryClient
    from lamina.registry.client.transport import Transport

    authfile = getattr(args, "authfile", None)

    def make(host: str, plain_http: bool) -> RegistryClient:
        def lookup(registry: str) -> Credentials | None:
            # the mirror passes the registry's credentials on to the registry only
            target = ref.registry if normalize_host(registry) == host else registry
            return load_credentials(target, authfile)

        return RegistryClient(Transport(lookup, insecure=args.insecure or plain_http))

    return mirrored_fetcher(direct, ref.registry, urls, make)


class _RichTransfer:
    """One bar per blob, on stderr (the TransferProgress of the CLI)."""

    def __init__(self, bar: RichProgress) -> None:
        self._bar = bar
        self._tasks: dict[str, TaskID] = {}

    def _task(self, desc: Descriptor) -> TaskID:
        key = str(desc.digest)
        if key not in self._tasks:
            self._tasks[key] = self._bar.add_task(desc.digest.encoded[:12], total=desc.size)
        return self._tasks[key]

    def start(self, desc: Descriptor) -> None:
        self._task(desc)

    def advance(self, desc: Descriptor, nbytes: int) -> None:
        self._bar.update(self._task(desc), advance=nbytes)

    def restart(self, desc: Descriptor) -> None:
        self._bar.reset(self._task(desc), total=desc.size)

    def finish(self, desc: Descriptor, how: str) -> None:
        self._bar.update(
            self._task(desc),
            completed=desc.size,
            description=f"{desc.digest.encoded[:12]} {_VERBS.get(how, how)}",
        )


@contextmanager
def _transfer_progress(enabled: bool) -> Iterator[TransferProgress]:
    from lamina.image.api import NoProgress

    if not enabled or not sys.stderr.isatty():
        yield NoProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    ) as bar:
        yield _RichTransfer(bar)


def _parallel(args: argparse.Namespace, default: int) -> int:
    if args.parallel is None:
        return default
    value: int = args.parallel
    if value < 1 or value > 64:
        raise InvalidArgument(f"--parallel {value} is out of range", hint="use 1 to 64")
    return value


def cmd_pull(args: argparse.Namespace) -> int:
    from lamina.image.transfer.blob_sources import BlobSources
    from lamina.image.transfer.pull import DEFAULT_PARALLEL, pull_image
    from lamina.oci.platform import Platform

    ref = Reference.parse(args.ref)
    store = open_store(args)
    platform = Platform.parse(args.platform) if args.platform else None
    parallel = _parallel(args, DEFAULT_PARALLEL)

    async def go(progress: TransferProgress) -> Any:
        async with _pull_source(args, ref) as client:
            return await pull_image(
                client, store, ref, platform=platform, progress=progress, parallel=parallel
            )

    with _transfer_progress(not (args.json or args.quiet)) as progress:
        result = _run(go(progress))
    BlobSources(store.root).record(ref.registry, ref.repository, [b.digest for b in result.blobs])
    if args.json:
        print_json(
            {
                "name": result.name,
                "digest": str(result.top.digest),
                "manifest": str(result.manifest.digest),
                "mediaType": result.top.media_type,
                "blobs": len(result.blobs),
                "fetched": result.fetched,
                "fetchedBytes": result.fetched_bytes,
            }
        )
    else:
        print(f"Pulled {ref.familiar()} ({result.top.digest})")
    return 0


def _destination(args: argparse.Namespace, names: tuple[str, ...]) -> Reference:
    from lamina.image import images as img

    if args.dest:
        return Reference.parse(args.dest)
    try:
        if img.normalize(args.ref) in names:
            return Reference.parse(args.ref)
    except InvalidReference:
        pass
    raise InvalidArgument(
        f"{args.ref} is not an image name to push to",
        hint=f"name the destination: lamina push {args.ref} REGISTRY/REPOSITORY:TAG",
    )


def cmd_push(args: argparse.Namespace) -> int:
    from lamina.image import images as img
    from lamina.image.transfer.blob_sources import BlobSources
    from lamina.image.transfer.push import DEFAULT_PARALLEL, plan_push, push_image

    store = open_store(args)
    image = img.resolve(store, args.ref)
    dest = _destination(args, image.names)
    plan = plan_push(store, image.descriptor, image.manifest_descriptor)
    sources = BlobSources(store.root)
    parallel = _parallel(args, DEFAULT_PARALLEL)

    async def go(progress: TransferProgress) -> Any:
        async with _client(args) as client:
            return await push_image(
                client,
                store,
                plan,
                dest,
                progress=progress,
                parallel=parallel,
                mount_sources=lambda d: sources.lookup(dest.registry, d),
            )

    with _transfer_progress(not (args.json or args.quiet)) as progress:
        result = _run(go(progress))
    sources.record(dest.registry, dest.repository, [b.digest for b in plan.blobs])
    if args.json:
        print_json(
            {
                "reference": str(dest),
                "digest": str(result.descriptor.digest),
                "mediaType": result.descriptor.media_type,
                "blobs": len(result.blobs),
                "uploaded": result.uploaded,
                "mounted": result.mounted,
                "existed": result.existed,
                "uploadedBytes": result.uploaded_bytes,
            }
        )
    else:
        print(
            f"Pushed {dest.familiar()} ({result.descriptor.digest}): "
            f"{result.uploaded} blob(s) sent, {result.mounted} mounted, "
            f"{result.existed} already there"
        )
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        if args.password is not None:
            raise InvalidArgument("--password and --password-stdin are exclusive")
        return sys.stdin.read().rstrip("\r\n")
    if args.password is not None:
        return str(args.password)
    if not sys.stdin.isatty():
        raise InvalidArgument("no password given", hint="pass --password-stdin or -p")
    return getpass.getpass("Password: ")


def cmd_login(args: argparse.Namespace) -> int:
    from lamina.registry.client.credentials import (
        Credentials,
        normalize_host,
        save_credentials,
    )

    host = normalize_host(args.server)
    username = args.username
    if not username:
        if not sys.stdin.isatty() or args.password_stdin:
            raise InvalidArgument("no user name given", hint="pass -u USER")
        username = input("Username: ")
    creds = Credentials(username, _read_password(args))
    if not creds.password:
        raise InvalidArgument("the password is empty", hint="pass --password-stdin or -p")

    async def check() -> None:
        async with _client(args, creds) as client:
            await client.check(host)

    _run(check())
    path = save_credentials(host, creds, args.authfile)
    print(f"Login Succeeded (credentials saved in {path})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from lamina.registry.client.credentials import normalize_host, remove_credentials

    host = normalize_host(args.server)
    path = remove_credentials(host, args.authfile)
    print(f"Removed login credentials for {host} from {path}")
    return 0
