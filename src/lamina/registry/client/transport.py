"""HTTP for the registry client: one aiohttp session, auth, retries, error mapping.

:meth:`Transport.request` is the one narrow method (httpx's ``handle_request``): it
sends a request, answers a 401 through :class:`~.authflow.AuthFlow` and retries once,
retries idempotent failures (dropped connections, 5xx, 429) with exponential backoff,
and maps refusals to lamina errors. Bodies are given as bytes or as a factory of async
byte iterators, so a retry can send the body again from its start.

Scheme: ``https`` with certificate verification, unless the registry is insecure:
loopback (``localhost``, ``127.0.0.0/8``, ``::1``, as docker treats them) or named by the
caller's ``insecure``. For an insecure registry, :meth:`Transport.prepare` probes once
whether it speaks TLS at all: if so, ``https`` without verification, else plain ``http``
(docker's insecure-registry rule). Redirects are followed by aiohttp, which drops the
Authorization header when the redirect leaves the origin (a blob served from S3).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from ssl import SSLContext
from typing import Any

from lamina.errors import LaminaError, NotFound, ToolError
from lamina.registry.auth import Scope
from lamina.registry.client.authflow import AuthFlow, CredentialLookup
from lamina.registry.client.tls import aiohttp, verified_context
from lamina.registry.errors import CODES, RegistryError

Body = bytes | Callable[[], AsyncIterable[bytes]] | None

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures after which the same request may be sent again: the connection dropped or
# stalled before a whole answer came back.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)
_ERROR_BODY_MAX = 64 << 10
USER_AGENT = "lamina"
READ_BUFFER = 2 << 20
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    host = host.strip("[]").split("]")[0]
    return host in {"localhost", "::1"} or host.startswith("127.")


class Backoff:
    """Exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s ... capped at 5 s."""

    def __init__(self, attempts: int = 5, base: float = 0.2, cap: float = 5.0) -> None:
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.tried = 0

    def more(self) -> bool:
        return self.tried < self.attempts

    async def wait(self, retry_after: str | None = None) -> None:
        delay = min(self.cap, self.base * (2**self.tried)) * (0.5 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = min(max(delay, float(retry_after)), 30.0)
        self.tried += 1
        await asyncio.sleep(delay)


class Transport:
    """An aiohttp session with registry auth and retries. Use as ``async with``."""

    def __init__(
        self,
        credentials: CredentialLookup,
        *,
        insecure: bool = False,
        connections: int = 16,
        attempts: int = 5,
    ) -> None:
        self.auth = AuthFlow(credentials)
        self.insecure = insecure
        self.attempts = attempts
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._schemes: dict[str, tuple[str, bool]] = {}  # registry -> (scheme, verify)
        self._probe_lock = asyncio.Lock()

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Blobs must arrive byte for byte: never decode a Content-Encoding.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120),
            headers={"User-Agent": USER_AGENT},
            # aiohttp's default 64 KiB buffer pauses the socket every 128 KiB: a blob
            # then arrives in tiny bursts. Let a few MiB queue up per response.
            read_bufsize=READ_BUFFER,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ToolError("registry transport used outside `async with`")
        return self._session

    def _is_insecure(self, registry: str) -> bool:
        return self.insecure or is_loopback(registry)

    async def prepare(self, registry: str) -> None:
        """Settle the scheme of ``registry`` (see the module docstring); cheap after
        the first call."""
        if registry in self._schemes:
            return
        if not self._is_insecure(registry):
            self._schemes[registry] = ("https", True)
            return
        async with self._probe_lock:
            if registry in self._schemes:
                return
            url = f"https://{self._host(registry)}/v2/"
            try:
                async with self.session.get(url, ssl=False, timeout=_PROBE_TIMEOUT):
                    chosen = ("https", False)
            except (aiohttp.ClientError, TimeoutError):
                chosen = ("http", False)
            self._schemes[registry] = chosen

    def scheme(self, registry: str) -> str:
        known = self._schemes.get(registry)
        if known is not None:
            return known[0]
        return "http" if self._is_insecure(registry) else "https"

    def verify_tls(self, registry: str) -> bool:
        return not self._is_insecure(registry)

    def tls(self, registry: str) -> SSLContext | bool:
        """aiohttp's ``ssl=`` for ``registry``: our verified context, or ``False``
        (insecure). Never ``True``: aiohttp's own default context holds no CA (tls.py)."""
        return verified_context() if self.verify_tls(registry) else False

    @staticmethod
    def _host(registry: str) -> str:
        # Docker Hub's API lives on registry-1.docker.io, not on docker.io.
        return "registry-1.docker.io" if registry == "docker.io" else registry

    def base_url(self, registry: str) -> str:
        return f"{self.scheme(registry)}://{self._host(registry)}"

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        scopes: Iterable[Scope] = (),
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        ok: Iterable[int] = (200,),
        what: str = "",
        retry: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send until an answer in ``ok`` comes back (yielded, released on exit) or the
        retries run out (raised as a lamina error). ``what`` names the object for
        messages (``manifest x:1``). With ``retry=False`` nothing is retried but the
        401 answer, and a network failure propagates as aiohttp raised it."""
        scope_list = tuple(scopes)
        ok_set = frozenset(ok)
        backoff = Backoff(self.attempts if retry else 0)
        answered_challenge = False
        tls = self.tls(registry)
        while True:
            send_headers = dict(headers or {})
            authorization = self.auth.authorization(registry, scope_list)
            if authorization:
                send_headers["Authorization"] = authorization
            data: Any = body() if callable(body) else body
            try:
                resp = await self.session.request(
                    method, url, headers=send_headers, data=data, ssl=tls
                )
            except NETWORK_ERRORS as exc:
                if not retry:
                    raise  # the caller resumes by itself (uploads)
                if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                    raise _certificate_error(registry, exc) from exc
                # a name that does not resolve will not resolve in a second either
                dns = isinstance(exc, aiohttp.ClientConnectorDNSError)
                if dns or not backoff.more():
                    raise _network_error(method, url, exc) from exc
                await backoff.wait()
                continue
            try:
                if resp.status == 401 and not answered_challenge:
                    answered_challenge = True
                    challenge = resp.headers.get("WWW-Authenticate")
                    resp.release()
                    await self.auth.challenged(self.session, registry, challenge, scope_list, tls)
                    continue
                if resp.status in RETRY_STATUSES and backoff.more() and resp.status not in ok_set:
                    retry_after = resp.headers.get("Retry-After")
                    resp.release()
                    await backoff.wait(retry_after)
                    continue
                if resp.status not in ok_set:
                    raise await error_from_response(resp, method, registry, what)
                yield resp
                return
            finally:
                resp.release()


def _network_error(method: str, url: str, exc: BaseException) -> ToolError:
    reason = str(exc) or type(exc).__name__
    return ToolError(
        f"{method} {url} failed after retries: {reason}",
        hint="check that the registry is up and reachable (is it HTTP? then use --insecure)",
    )


def _certificate_error(registry: str, exc: aiohttp.ClientConnectorCertificateError) -> ToolError:
    # Not retried: the same certificate comes back next time.
    return ToolError(
        f"{registry} presented a certificate this host does not trust: {exc.certificate_error}",
        hint="add its CA to the system trust store (or SSL_CERT_FILE), or pass --insecure",
    )


async def error_from_response(
    resp: aiohttp.ClientResponse, method: str, registry: str, what: str
) -> LaminaError:
    """A lamina error for a refusal, using the distribution-spec error body if any."""
    try:
        raw = await resp.content.read(_ERROR_BODY_MAX)
    except NETWORK_ERRORS:
        raw = b""
    code, message = _first_error(raw)
    status = resp.status
    subject = what or f"{method} {resp.url.path}"
    text = f"{subject}: {message}" if message else f"{subject}: HTTP {status}"
    if status == 401:
        return RegistryError(
            "UNAUTHORIZED",
            f"{registry} refused the credentials ({text})",
            hint=f"log in with `lamina login {registry}` (or pass --authfile)",
        )
    if status == 403:
        return RegistryError(
            "DENIED", f"access denied by {registry} ({text})", hint="check your permissions"
        )
    if status == 404:
        return NotFound(f"{text} (not found on {registry})", hint="check the name and tag")
    if code in CODES and code not in ("UNAUTHORIZED", "DENIED"):
        return RegistryError(code, f"{registry} refused {text}", status=status)
    return ToolError(
        f"{registry} answered HTTP {status} to {method} {resp.url.path}: {message or 'no detail'}",
        hint="the registry may be overloaded or misconfigured; try again later",
    )


def _first_error(raw: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "", raw[:200].decode("utf-8", "replace").strip()
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = first.get("code")
        message = first.get("message")
        return (code if isinstance(code, str) else ""), (
            message if isinstance(message, str) else ""
        )
    return "", ""
