"""Registry mirrors for ``lamina pull``: ``--mirror URL`` (repeatable) and the
``mirrors.json`` setting, tried in order before the registry itself.

The setting lives in ``$LAMINA_CONFIG_DIR/mirrors.json`` (default
``$XDG_CONFIG_HOME/lamina/mirrors.json``, i.e. ``~/.config/lamina/mirrors.json``)::

    {"mirrors": {"docker.io": ["http://127.0.0.1:4001"],
                 "*": ["http://peer.local:4001"]}}

keys are registry hosts (``*`` for any); ``--mirror`` comes first, then the entries of
the image's registry, then those of ``*``.

Each request (manifest, blob) goes to the first mirror that answers it and, when every
mirror fails, to the registry itself. A mirror is asked with containerd's
``?ns=<registry>``, so a lamina peer serves the registry the image is really from (and
refuses one it does not mirror, rather than serving another registry's image under
that name). The registry's credentials go to the mirror, which passes them only to that
registry; the mirror's 401 challenge names the registry's own token realm.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lamina.errors import InvalidArgument, InvalidFormat, LaminaError

if TYPE_CHECKING:
    from collections.abc import Callable

    from lamina.image.api import RemoteManifest, TransferProgress
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.reference import Reference
    from lamina.registry.client.remote import RegistryClient
    from lamina.store.api import BlobInfo, Ingester

MAX_CONFIG = 1 << 20
MAX_METADATA_BYTES = 4 << 20  # lamina.store.api's, without importing the store here


def config_dir() -> Path:
    explicit = os.environ.get("LAMINA_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "lamina"


def mirror_host(url: str) -> tuple[str, bool]:
    """``(host[:port], plain_http)`` of a mirror URL (a bare host means https)."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text if "://" in text else f"https://{text}")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise InvalidArgument(
            f"mirror {url!r} is not an http(s) origin",
            hint="give it as http://HOST:PORT (a lamina p2p peer) or https://HOST",
        )
    return parts.netloc.lower(), parts.scheme == "http"


def configured_mirrors(registry: str, path: Path | None = None) -> list[str]:
    file = path or config_dir() / "mirrors.json"
    try:
        raw = file.read_bytes()[:MAX_CONFIG]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidArgument(f"cannot read {file}: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidFormat(f"{file} is not JSON: {exc}", hint="see docs/p2p.md") from exc
    table = doc.get("mirrors") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise InvalidFormat(
            f"{file} has no 'mirrors' object",
            hint='write {"mirrors": {"docker.io": ["http://127.0.0.1:4001"]}}',
        )
    out: list[str] = []
    for key in (registry, "*"):
        entries = table.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise InvalidFormat(f"{file}: mirrors[{key!r}] must be a list of URLs")
        out += entries
    return out


class _MirrorClient:
    """A registry client pointed at one mirror, asking for ``registry``'s content."""

    def __init__(self, client: RegistryClient, host: str, registry: str) -> None:
        from urllib.parse import quote

        self.client = client
        self.host = host
        self.registry = registry
        ns = quote(registry, safe=":")
        inner_url = client.url

        def url(ref: Reference, path: str) -> str:
            return f"{inner_url(ref, path)}?ns={ns}"

        client.url = url  # type: ignore[method-assign]

    def rewrite(self, ref: Reference) -> Reference:
        return dataclasses.replace(ref, registry=self.host)


class MirroredFetcher:
    """A :class:`lamina.image.api.Fetcher`: mirrors in order, then the registry."""

    def __init__(self, direct: RegistryClient, mirrors: list[_MirrorClient]) -> None:
        self.direct = direct
        self.mirrors = mirrors

    async def __aenter__(self) -> MirroredFetcher:
        await self.direct.__aenter__()
        for m in self.mirrors:
            await m.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for m in self.mirrors:
            await m.client.__aexit__(*exc)
        await self.direct.__aexit__(*exc)

    @staticmethod
    def _skip(m: _MirrorClient, what: str, exc: LaminaError) -> None:
        sys.stderr.write(f"mirror {m.host}: {what}: {exc.message}; trying the next source\n")

    async def fetch_manifest(
        self, ref: Reference, max_size: int = MAX_METADATA_BYTES
    ) -> RemoteManifest:
        for m in self.mirrors:
            try:
                return await m.client.fetch_manifest(m.rewrite(ref), max_size)
            except LaminaError as exc:
                self._skip(m, "manifest", exc)
        return await self.direct.fetch_manifest(ref, max_size)

    async def fetch_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        ingester: Ingester,
        progress: TransferProgress,
    ) -> BlobInfo:
        for m in self.mirrors:
            try:
                return await m.client.fetch_blob(m.rewrite(ref), descriptor, ingester, progress)
            except LaminaError as exc:
                self._skip(m, f"blob {descriptor.digest.encoded[:12]}", exc)
                progress.restart(descriptor)
        return await self.direct.fetch_blob(ref, descriptor, ingester, progress)


def mirrored_fetcher(
    direct: RegistryClient,
    registry: str,
    urls: list[str],
    make_client: Callable[[str, bool], RegistryClient],
) -> MirroredFetcher:
    """``make_client(mirror_host, plain_http)``: a registry client whose credentials for
    ``mirror_host`` are ``registry``'s."""
    clients = []
    for url in urls:
        host, plain = mirror_host(url)
        clients.append(_MirrorClient(make_client(host, plain), host, registry))
    return MirroredFetcher(direct, clients)
