"""Credentials stay on their origin; redirects are bounded.

A registry on loopback that wants Basic credentials and keeps its bytes elsewhere, as
S3-backed registries do: blob GETs are redirected to a storage server on another
origin, and upload sessions are given a ``Location`` there. Both are real aiohttp
servers on loopback; the storage server records every Authorization header it is
sent, and must see none. A registry whose manifest GET redirects to itself must end
in a lamina error that says how many redirects were followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from registry_client_support import outward_ipv4

from helpers.images import make_random_image
from lamina.errors import LaminaError, ToolError
from lamina.image import images as img
from lamina.image.api import NoProgress
from lamina.image.transfer.pull import pull_image
from lamina.image.transfer.push import plan_push, push_image
from lamina.oci.reference import Reference
from lamina.registry.client.credentials import Credentials
from lamina.registry.client.remote import RegistryClient
from lamina.registry.client.transport import Transport
from lamina.registry.errors import RegistryError
from lamina.store.local import LocalStore

USER, PASSWORD = "alice", "s3cret-pw"
TOKEN = "t0k3n-for-the-registry-only"
GOOD = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class Storage:
    """The other origin: serves blobs and takes uploads; records Authorization."""

    blobs: dict[str, bytes]
    authorizations: list[str | None] = field(default_factory=list)
    requests: int = 0
    uploads: dict[str, bytearray] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.authorizations.append(request.headers.get("Authorization"))
        parts = request.path.strip("/").split("/")
        if parts[0] == "blob" and request.method in ("GET", "HEAD"):
            data = self.blobs.get(parts[1])
            if data is None:
                return web.Response(status=404)
            return web.Response(body=data, content_type="application/octet-stream")
        if parts[0] == "upload":
            session = self.uploads.setdefault(parts[1], bytearray())
            body = await request.read()
            session += body
            if request.method == "PUT":
                digest = request.query["digest"]
                if "sha256:" + hashlib.sha256(session).hexdigest() != digest:
                    return web.Response(status=400)
                self.blobs[digest] = bytes(session)
                return web.Response(status=201, headers={"Docker-Content-Digest": digest})
            headers = {"Location": request.path, "Range": f"0-{max(len(session) - 1, 0)}"}
            return web.Response(status=202 if request.method == "PATCH" else 204, headers=headers)
        return web.Response(status=404)


@dataclass
class Registry:
    """A registry on one origin that wants Basic credentials on every /v2/ request and
    sends blob bytes and uploads to ``storage_url``."""

    storage: Storage
    storage_url: str = ""
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    authorized: int = 0
    loop_manifests: bool = False
    bearer: bool = False  # token auth: the realm is /token on this same server

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)
        app.router.add_get("/token", self.token)
        return app

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != GOOD:
            return web.Response(status=401)
        return web.json_response({"token": TOKEN, "expires_in": 300})

    def _challenge(self, request: web.Request) -> str:
        if not self.bearer:
            return 'Basic realm="test"'
        return f'Bearer realm="{request.scheme}://{request.host}/token",service="test"'

    async def handle(self, request: web.Request) -> web.StreamResponse:
        wanted = f"Bearer {TOKEN}" if self.bearer else GOOD
        if request.headers.get("Authorization") != wanted:
            return web.Response(status=401, headers={"WWW-Authenticate": self._challenge(request)})
        self.authorized += 1
        tail = request.match_info["tail"]
        if tail == "":
            return web.json_response({})
        _, kind, rest = _split(tail)
        if kind == "manifests":
            if self.loop_manifests:
                return web.Response(status=302, headers={"Location": request.path})
            if request.method == "PUT":
                data = await request.read()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                media = request.headers["Content-Type"]
                self.manifests[rest] = self.manifests[digest] = (media, data)
                return web.Response(status=201, headers={"Docker-Content-Digest": digest})
            found = self.manifests.get(rest)
            if found is None:
                return web.Response(status=404)
            media, data = found
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            return web.Response(
                body=data, headers={"Content-Type": media, "Docker-Content-Digest": digest}
            )
        if kind == "blobs" and rest.startswith("uploads"):
            location = f"{self.storage_url}/upload/{uuid.uuid4().hex}"
            return web.Response(status=202, headers={"Location": location, "Range": "0-0"})
        if kind == "blobs":
            if rest not in self.storage.blobs:
                return web.Response(status=404)
            if request.method == "HEAD":
                size = str(len(self.storage.blobs[rest]))
                return web.Response(status=200, headers={"Content-Length": size})
            return web.Response(status=307, headers={"Location": f"{self.storage_url}/blob/{rest}"})
        return web.Response(status=404)


def _split(tail: str) -> tuple[str, str, str]:
    for kind in ("manifests", "blobs"):
        marker = f"/{kind}/"
        if marker in tail:
            repo, _, rest = tail.partition(marker)
            return repo, kind, rest
    return tail, "", ""


@asynccontextmanager
async def _serve(app: web.Application, context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    await site.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _lookup(registry_host: str):  # type: ignore[no-untyped-def]
    def lookup(registry: str) -> Credentials | None:
        return Credentials(USER, PASSWORD) if registry == registry_host else None

    return lookup


@pytest.fixture
def source(tmp_path: Path) -> Iterator[LocalStore]:
    store = LocalStore(tmp_path / "src")
    make_random_image(store, "docker.io/library/app:1", seed=3, layers=2)
    yield store


async def _push_then_pull(
    source: LocalStore, dest_root: Path, *, tls: ssl.SSLContext | None = None, bearer: bool = False
) -> tuple[Registry, Storage]:
    storage = Storage({})
    registry = Registry(storage, bearer=bearer)
    async with _serve(storage.app()) as storage_host, _serve(registry.app(), tls) as host:
        registry.storage_url = f"http://{storage_host}"
        ref = Reference.parse(f"{host}/team/app:1")
        image = img.resolve(source, "app:1")
        plan = plan_push(source, image.descriptor, image.manifest_descriptor)
        async with RegistryClient(Transport(_lookup(host))) as client:
            await push_image(client, source, plan, ref, progress=NoProgress())
        pushed = storage.requests
        assert pushed > 0 and set(storage.blobs) >= {str(d.digest) for d in plan.blobs}
        async with RegistryClient(Transport(_lookup(host))) as client:
            result = await pull_image(client, LocalStore(dest_root), ref, progress=NoProgress())
        assert storage.requests > pushed  # the blob GETs went to storage
        assert result.fetched == len(plan.blobs)
    return registry, storage


def test_push_upload_location_on_another_origin_gets_no_credentials(
    tmp_path: Path, source: LocalStore
) -> None:
    registry, storage = asyncio.run(_push_then_pull(source, tmp_path / "dest"))
    assert registry.authorized > 0  # the registry itself did get them
    assert storage.authorizations and set(storage.authorizations) == {None}


def test_bearer_token_stays_on_the_registry_origin(tmp_path: Path, source: LocalStore) -> None:
    registry, storage = asyncio.run(_push_then_pull(source, tmp_path / "dest", bearer=True))
    assert registry.authorized > 0
    assert storage.authorizations and set(storage.authorizations) == {None}


def test_redirect_from_tls_registry_to_plain_http_gets_no_credentials(
    tmp_path: Path, source: LocalStore
) -> None:
    # https registry (loopback: its certificate is not checked), storage on plain http:
    # a scheme downgrade as well as another origin
    import trustme

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    registry, storage = asyncio.run(_push_then_pull(source, tmp_path / "dest", tls=context))
    assert registry.authorized > 0
    assert storage.authorizations and set(storage.authorizations) == {None}


def test_same_origin_is_scheme_host_and_port() -> None:
    from lamina.http import same_origin

    assert same_origin("https://r.example/v2/", "https://R.example:443/x")
    assert same_origin("http://r.example/v2/", "http://r.example:80/y")
    assert not same_origin("https://r.example/v2/", "http://r.example/v2/")  # downgrade
    assert not same_origin("https://r.example/v2/", "https://r.example:8443/v2/")
    assert not same_origin("https://r.example/v2/", "https://s3.example/v2/")


def test_a_redirect_loop_is_a_clear_error_after_max_redirects() -> None:
    async def go() -> tuple[BaseException, Registry]:
        registry = Registry(Storage({}), loop_manifests=True)
        async with (
            _serve(registry.app()) as host,
            RegistryClient(Transport(_lookup(host))) as client,
        ):
            try:
                await client.fetch_manifest(Reference.parse(f"{host}/team/app:1"))
            except BaseException as exc:  # noqa: BLE001 - the kind is the point
                return exc, registry
        raise AssertionError("a redirect loop was answered")

    exc, registry = asyncio.run(go())
    MAX_REDIRECTS = 10  # lamina.http.MAX_REDIRECTS, as the README says
    assert isinstance(exc, ToolError), repr(exc)
    assert f"more than {MAX_REDIRECTS} redirects" in exc.message
    assert exc.hint
    # the first request, then MAX_REDIRECTS redirects followed (all authorized)
    assert registry.authorized == MAX_REDIRECTS + 1


# -- the token realm: over TLS, unless the registry itself is insecure ------------------


def test_plain_http_token_realm_of_a_tls_registry_gets_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustme

    from lamina.http.tls import verified_context

    address = outward_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address to serve verified TLS on")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(address).configure_cert(server_context)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    verified_context.cache_clear()
    seen: list[str | None] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"token": "t0k3n"})

    async def go() -> BaseException:
        realm_app = web.Application()
        realm_app.router.add_get("/token", token)
        realm_runner = web.AppRunner(realm_app)
        await realm_runner.setup()
        realm_site = web.TCPSite(realm_runner, address, 0)
        await realm_site.start()
        realm_port = realm_runner.addresses[0][1]

        async def v2(request: web.Request) -> web.Response:
            challenge = f'Bearer realm="http://{address}:{realm_port}/token",service="t"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", v2)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, address, 0, ssl_context=server_context)
        await site.start()
        host = f"{address}:{runner.addresses[0][1]}"
        try:
            async with RegistryClient(Transport(_lookup(host))) as client:
                try:
                    await client.check(host)
                except LaminaError as exc:
                    return exc
        finally:
            await runner.cleanup()
            await realm_runner.cleanup()
        raise AssertionError("the check passed")

    try:
        exc = asyncio.run(go())
    finally:
        verified_context.cache_clear()
    assert "only over TLS" in str(exc), exc
    assert isinstance(exc, RegistryError)
    assert seen == []  # the password never went out in the clear


def test_a_manifest_over_the_cap_is_refused_with_a_hint() -> None:
    from lamina.errors import LimitExceeded

    async def go() -> LimitExceeded:
        registry = Registry(Storage({}))
        big = b'{"schemaVersion":2,"pad":"' + b"x" * (4 << 20) + b'"}'
        registry.manifests["1"] = ("application/vnd.oci.image.manifest.v1+json", big)
        async with (
            _serve(registry.app()) as host,
            RegistryClient(Transport(_lookup(host))) as client,
        ):
            try:
                await client.fetch_manifest(Reference.parse(f"{host}/team/app:1"))
            except LimitExceeded as exc:
                return exc
        raise AssertionError("a manifest over 4 MiB was taken")

    exc = asyncio.run(go())
    assert str(4 << 20) in exc.message and "manifest" in exc.message
    assert exc.hint
