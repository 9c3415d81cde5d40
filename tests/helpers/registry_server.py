"""A registry server (``make_app``) running in a thread of the test process on a free
loopback port, and a small http.client-based client for it. Used by the registry
server tests; the server's own event loop runs in the thread."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Server:
    """make_app(...) served on 127.0.0.1:<free port> from a background thread."""

    def __init__(self, app: web.Application, ssl_context: Any = None) -> None:
        self.app = app
        self.port = 0
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._runner: web.AppRunner | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        if not self._loop.is_running():  # its thread is done with it
            self._loop.close()


class Client:
    def __init__(
        self, port: int, *, tls: ssl.SSLContext | None = None, auth: str | None = None
    ) -> None:
        self.port = port
        self.tls = tls
        self.auth = auth

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if self.auth is not None:
            headers.setdefault("Authorization", self.auth)
        try:
            encode_chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers=headers, encode_chunked=encode_chunked)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def push_blob(self, name: str, data: bytes, algorithm: str = "sha256") -> str:
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        status, _, body = self.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data)
        assert status == 201, body
        return digest

    def put_manifest(
        self, name: str, ref: str, doc: dict[str, Any], media_type: str = OCI_MANIFEST
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        return self.request(
            "PUT",
            f"/v2/{name}/manifests/{ref}",
            json.dumps(doc).encode(),
            {"Content-Type": media_type},
        )
