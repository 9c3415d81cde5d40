"""Auth end to end over real HTTP on loopback: lamina's aiohttp server with each
authenticator, driven by a plain aiohttp client doing the 401 -> /token -> retry dance
by hand."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers.cli import Lamina
from lamina.registry.authn import open_authenticator, write_htpasswd
from lamina.registry.challenges import basic_authorization, parse_challenge
from lamina.registry.server import make_app
from lamina.registry.storage.filesystem import FilesystemStorage

SERVICE = "registry.test"
ALICE = basic_authorization("alice", "wonderland")
BOB = basic_authorization("bob", "builder")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@asynccontextmanager
async def registry(
    tmp_path: Path,
    *,
    token: bool,
    anonymous_pull: bool = False,
    acl: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """lamina's registry on a free loopback port; yields its base URL."""
    htpasswd = tmp_path / "htpasswd"
    if not htpasswd.exists():
        write_htpasswd(str(htpasswd), {"alice": "wonderland", "bob": "builder"}, cost=4)
    acl_path = None
    if acl is not None:
        acl_path = tmp_path / "acl.json"
        acl_path.write_text(json.dumps(acl))
    # Bind first: token auth needs the issuer's absolute URL (with the port) as realm.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    authenticator = open_authenticator(
        htpasswd=str(htpasswd),
        token_key=str(tmp_path / "token.pem") if token else None,
        realm=f"{base}/token" if token else "lamina registry",
        service=SERVICE,
        acl=None if acl_path is None else str(acl_path),
        anonymous_pull=anonymous_pull,
    )
    app = make_app(FilesystemStorage(tmp_path / "storage"), authenticator=authenticator)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield base
    finally:
        await runner.cleanup()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 120))


def _headers(authorization: str | None, **extra: str) -> dict[str, str]:
    return {**({"Authorization": authorization} if authorization else {}), **extra}


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return json.loads(await resp.read())


def _image() -> tuple[bytes, bytes, bytes]:
    """(layer, config, manifest) bytes of a tiny image."""
    layer = b"not really a tar, registries do not look" * 10
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'

    def desc(media: str, data: bytes) -> dict[str, Any]:
        return {
            "mediaType": media,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        }
    ).encode()
    return layer, config, manifest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _push(http: aiohttp.ClientSession, base: str, repo: str, auth: str | None) -> int:
    """Push the tiny image to ``repo`` with ``auth``; the first failing status, or 201."""
    layer, config, manifest = _image()
    for blob in (layer, config):
        async with http.post(
            f"{base}/v2/{repo}/blobs/uploads/?digest={_digest(blob)}",
            data=blob,
            headers=_headers(auth, **{"Content-Type": "application/octet-stream"}),
        ) as resp:
            if resp.status != 201:
                return resp.status
    async with http.put(
        f"{base}/v2/{repo}/manifests/v1",
        data=manifest,
        headers=_headers(auth, **{"Content-Type": OCI_MANIFEST}),
    ) as resp:
        return resp.status


async def _token(
    http: aiohttp.ClientSession, challenge_header: str, creds: str | None
) -> tuple[int, str]:
    """Follow a Bearer challenge to the issuer: (status, "Bearer <token>" or "")."""
    challenge = parse_challenge(challenge_header)
    assert challenge.scheme == "bearer" and challenge.realm and challenge.service
    params = [("service", challenge.service)]
    params += [("scope", str(s)) for s in challenge.scopes]
    async with http.get(challenge.realm, params=params, headers=_headers(creds)) as resp:
        if resp.status != 200:
            return resp.status, resp.headers.get("WWW-Authenticate", "")
        assert resp.headers["Cache-Control"] == "no-store"
        body = await _json(resp)
        assert body["token"] == body["access_token"] and body["expires_in"] > 0
        return 200, "Bearer " + body["token"]


def test_basic_auth(tmp_path: Path) -> None:
    async def go() -> None:
        async with registry(tmp_path, token=False) as base, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v2/") as resp:
                assert resp.status == 401
                assert (
                    resp.headers["WWW-Authenticate"]
                    == 'Basic realm="lamina registry",charset="UTF-8"'
                )
                assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
                assert (await _json(resp))["errors"][0]["code"] == "UNAUTHORIZED"
            # Anonymous push is refused, with the challenge.
            assert await _push(http, base, "a", None) == 401
            wrong = basic_authorization("alice", "wonderlan")
            for creds in (wrong, basic_authorization("mallory", "wonderland"), "Basic ###"):
                async with http.get(f"{base}/v2/", headers=_headers(creds)) as resp:
                    assert resp.status == 401
                    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert await _push(http, base, "a", wrong) == 401
            async with http.get(f"{base}/v2/", headers=_headers(ALICE)) as resp:
                assert resp.status == 200
            assert await _push(http, base, "a", ALICE) == 201
            async with http.get(
                f"{base}/v2/a/manifests/v1", headers=_headers(BOB, Accept=OCI_MANIFEST)
            ) as resp:
                assert resp.status == 200 and await resp.read() == _image()[2]
            async with http.get(f"{base}/v2/a/manifests/v1") as resp:
                assert resp.status == 401  # anonymous pull is off

    run(go)


def test_token_flow(tmp_path: Path) -> None:
    async def go() -> None:
        async with registry(tmp_path, token=True) as base, aiohttp.ClientSession() as http:
            layer = _image()[0]
            url = f"{base}/v2/team/app/blobs/uploads/?digest={_digest(layer)}"
            async with http.post(url, data=layer) as resp:
                assert resp.status == 401
                challenge = resp.headers["WWW-Authenticate"]
            assert challenge == (
                f'Bearer realm="{base}/token",service="{SERVICE}",'
                'scope="repository:team/app:pull,push"'
            )
            # Anonymous tokens are refused (anonymous pull is off), wrong passwords too.
            status, header = await _token(http, challenge, None)
            assert status == 401 and header.startswith("Basic ")
            status, _ = await _token(http, challenge, basic_authorization("alice", "nope"))
            assert status == 401
            status, bearer = await _token(http, challenge, ALICE)
            assert status == 200
            async with http.post(url, data=layer, headers=_headers(bearer)) as resp:
                assert resp.status == 201
            # The rest of the push, one token per repository as clients do.
            assert await _push(http, base, "team/app", bearer) == 201

            # A pull token for team/app: pulls team/app, cannot push it or read others.
            async with http.get(f"{base}/v2/team/app/manifests/v1") as resp:
                pull_challenge = resp.headers["WWW-Authenticate"]
            assert pull_challenge.endswith('scope="repository:team/app:pull"')
            status, pull = await _token(http, pull_challenge, BOB)
            async with http.get(
                f"{base}/v2/team/app/manifests/v1", headers=_headers(pull, Accept=OCI_MANIFEST)
            ) as resp:
                assert resp.status == 200 and await resp.read() == _image()[2]
            assert await _push(http, base, "team/app", pull) == 401
            for path in (
                "/v2/other/manifests/v1",
                "/v2/other/tags/list",
                f"/v2/team/app/blobs/{_digest(layer)}",
            ):
                async with http.get(base + path, headers=_headers(pull)) as resp:
                    if "other" in path:
                        assert resp.status == 401
                        got = parse_challenge(resp.headers["WWW-Authenticate"])
                        assert got.params["error"] == "insufficient_scope"
                        assert [str(s) for s in got.scopes] == ["repository:other:pull"]
                    else:
                        assert resp.status == 200 and await resp.read() == layer
            async with http.delete(
                f"{base}/v2/team/app/manifests/{_digest(_image()[2])}", headers=_headers(pull)
            ) as resp:
                assert resp.status == 401
                assert 'scope="repository:team/app:delete"' in resp.headers["WWW-Authenticate"]
            # A forged token (signature flipped) and Basic credentials are not tokens.
            head, payload, sig = pull.removeprefix("Bearer ").split(".")
            raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
            forged = base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).rstrip(b"=")
            for creds in (f"Bearer {head}.{payload}.{forged.decode()}", ALICE):
                async with http.get(
                    f"{base}/v2/team/app/tags/list", headers=_headers(creds)
                ) as resp:
                    assert resp.status == 401

    run(go)


def test_anonymous_pull(tmp_path: Path) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            async with registry(tmp_path, token=False) as base:
                assert await _push(http, base, "pub/app", ALICE) == 201
            for token in (False, True):
                async with registry(tmp_path, token=token, anonymous_pull=True) as base:
                    async with http.get(
                        f"{base}/v2/pub/app/manifests/v1", headers={"Accept": OCI_MANIFEST}
                    ) as resp:
                        if token:
                            assert resp.status == 401
                            status, anon = await _token(
                                http, resp.headers["WWW-Authenticate"], None
                            )
                            assert status == 200
                        else:
                            assert resp.status == 200
                            anon = ""
                    async with http.get(
                        f"{base}/v2/pub/app/manifests/v1",
                        headers=_headers(anon or None, Accept=OCI_MANIFEST),
                    ) as resp:
                        assert resp.status == 200
                    # Anonymous push stays refused, whatever token the client holds.
                    assert await _push(http, base, "pub/app", anon or None) == 401
                    async with http.post(f"{base}/v2/pub/app/blobs/uploads/") as resp:
                        assert resp.status == 401
                        if token:
                            status, push = await _token(
                                http, resp.headers["WWW-Authenticate"], None
                            )
                            assert status == 200
                            assert await _push(http, base, "pub/app", push) == 401

    run(go)


def test_acl(tmp_path: Path) -> None:
    acl = {"users": {"alice": {"team/*": ["pull", "push"]}, "bob": {"*": ["pull"]}}}

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            async with registry(tmp_path, token=False, acl=acl) as base:
                assert await _push(http, base, "team/x", ALICE) == 201
                assert await _push(http, base, "other", ALICE) == 403
                assert await _push(http, base, "team/x", BOB) == 403
                async with http.get(f"{base}/v2/team/x/tags/list", headers=_headers(BOB)) as resp:
                    assert resp.status == 200
                async with http.post(
                    f"{base}/v2/other/blobs/uploads/", headers=_headers(ALICE)
                ) as resp:
                    assert resp.status == 403
                    assert (await _json(resp))["errors"][0]["code"] == "DENIED"
            async with registry(tmp_path, token=True, acl=acl) as base:
                async with http.post(f"{base}/v2/other/blobs/uploads/") as resp:
                    challenge = resp.headers["WWW-Authenticate"]
                status, bearer = await _token(http, challenge, ALICE)
                assert status == 200  # a token, but without the scope alice may not have
                async with http.post(
                    f"{base}/v2/other/blobs/uploads/", headers=_headers(bearer)
                ) as resp:
                    assert resp.status == 401
                    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]

    run(go)


@pytest.mark.slow
@pytest.mark.parametrize("token", [False, True], ids=["basic", "token"])
def test_lamina_login_push_pull(tmp_path: Path, lamina: Lamina, token: bool) -> None:
    """lamina's own client through lamina's auth: login, push, pull; refusals first."""
    lamina("bootstrap", "busybox", "-t", "bb")
    authfile = str(tmp_path / "auth.json")

    def cli(*args: str, check: bool = True, input: str | None = None) -> Any:
        return asyncio.to_thread(
            lamina, *args, "--insecure", "--authfile", authfile, check=check, input=input
        )

    async def go() -> None:
        async with registry(tmp_path, token=token) as base:
            host = base.removeprefix("http://")
            dest = f"{host}/team/bb:v1"
            anon = await cli("push", "-q", "bb", dest, check=False)
            assert anon.returncode != 0, anon.stderr
            assert "lamina login" in anon.stderr  # told to log in, not some other failure
            wrong = await cli(
                "login", host, "-u", "alice", "--password-stdin", check=False, input="nope\n"
            )
            assert wrong.returncode != 0, wrong.stderr
            assert "alice" in wrong.stderr or "invalid username or password" in wrong.stderr
            await cli("login", host, "-u", "alice", "--password-stdin", input="wonderland\n")
            assert "wonderland" not in (tmp_path / "auth.json").read_text()  # base64, not plain
            await cli("push", "-q", "bb", dest)
            await cli("pull", "-q", dest)
            await cli("logout", host)
            again = await cli("pull", "-q", dest, check=False)
            assert again.returncode != 0, again.stderr
            assert "lamina login" in again.stderr

    run(go)
