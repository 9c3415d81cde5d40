"""HTTP for the registry client: auth, retries, error mapping over aiohttp and lighthttp.

The pieces every lamina HTTP client shares (the session, the TLS context, backoff, the
kinds of network failure) live in :mod:`lamina.http`; this module adds the registry's:
the auth flow, the scheme of insecure registries, distribution-spec error bodies.

:meth:`Transport.request` is the one narrow method (httpx's ``handle_request``): it
sends a request, answers a 401 through :class:`~.authflow.AuthFlow` and retries once,
retries idempotent failures (dropped connections, 5xx, 429) with exponential backoff,
and maps refusals to lamina errors. Bodies are given as bytes or as a factory of async
byte iterators, so a retry can send the body again from its start.

Scheme: ``https`` with certificate verification, unless the registry is insecure:
loopback (``localhost``, ``127.0.0.0/8``, ``::1``, as docker treats them) or named by the
caller's ``insecure``. For an insecure registry, :meth:`Transport.prepare` probes once
whether it speaks TLS at all: if so, ``https`` without verification, else plain ``http``
(docker's insecure-registry rule).

Credentials go only to the registry's origin (scheme, host, port) and to the token
realm it names (authflow.py). Redirects are followed here, at most ten
(``lamina.http.redirects``); a hop to another origin (a blob served from S3, an upload
``Location`` on a storage host, the same host over plain http) is sent without the
Authorization header, and a 401 from there is not answered with credentials.

A GET or HEAD without a body to a plain-``http`` registry goes over the small client in
``lighthttp.py`` instead (it answers a pull from a loopback registry without importing
aiohttp, which costs more than the pull), each hop of a redirect chain on its own.
Both kinds of answer offer :class:`Response`, and :func:`network_errors` covers both
kinds of failure. aiohttp is imported (from ``lamina.http.tls``) on first use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit

from lamina.errors import LaminaError, NotFound, ToolError
from lamina.http import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    RETRY_STATUSES,
    USER_AGENT,
    Backoff,
    certificate_error,
    is_certificate_error,
    network_error,
    network_errors,
    new_session,
    next_hop,
    same_origin,
    too_many_redirects,
)
from lamina.http import is_dns_error as _is_aiohttp_dns_error
from lamina.registry.challenges import Scope
from lamina.registry.client.authflow import AuthFlow, CredentialLookup
from lamina.registry.client.lighthttp import Body as LightBody
from lamina.registry.client.lighthttp import CannotConnect, LightPool, speaks_tls
from lamina.registry.errors import CODES, RegistryError

if TYPE_CHECKING:
    import aiohttp

Body = bytes | Callable[[], AsyncIterable[bytes]] | None

_ERROR_BODY_MAX = 64 << 10
_PROBE_TIMEOUT = 5.0


class BodyReader(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...

    def at_eof(self) -> bool: ...

    def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]: ...


class _HasPath(Protocol):
    @property
    def path(self) -> str: ...


class Response(Protocol):
    """What the client reads of an answer: aiohttp's ``ClientResponse`` or lighthttp's."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> BodyReader: ...

    @property
    def url(self) -> _HasPath: ...

    def release(self) -> Any: ...


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    host = host.strip("[]").split("]")[0]
    return host in {"localhost", "::1"} or host.startswith("127.")


class IntoReader(Protocol):
    async def readinto(self, view: memoryview, /) -> int: ...


def into_reader(resp: Response) -> IntoReader:
    """A reader of ``resp``'s body into the caller's buffers: lighthttp's receives
    straight into them; aiohttp's pieces are copied in."""
    content = resp.content
    if isinstance(content, LightBody):
        return content
    return _PieceCopier(content)


class _PieceCopier:
    def __init__(self, content: BodyReader) -> None:
        self._pieces = content.iter_chunks()
        self._rest = memoryview(b"")

    async def readinto(self, view: memoryview, /) -> int:
        while not self._rest:
            try:
                piece, _ = await anext(self._pieces)
            except StopAsyncIteration:
                return 0
            self._rest = memoryview(piece)
        n = min(len(view), len(self._rest))
        view[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class Transport:
    """An aiohttp session with registry auth and retries. Use as ``async with``."""

    # False sends plain-HTTP GETs and HEADs over aiohttp too: bench/http_client.py
    # measures both on the same code path this way
    use_lighthttp: ClassVar[bool] = True

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
        self._light: LightPool | None = None
        self._schemes: dict[str, tuple[str, bool]] = {}  # registry -> (scheme, verify)
        self._probe_lock = asyncio.Lock()

    async def __aenter__(self) -> Transport:
        self._light = LightPool(self._connections)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._light is not None:
            await self._light.close()
            self._light = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def light(self) -> LightPool:
        if self._light is None:
            raise ToolError("registry transport used outside `async with`")
        return self._light

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session, made (and aiohttp imported) on first use."""
        if self._light is None:
            raise ToolError("registry transport used outside `async with`")
        if self._session is None:
            # bytes as sent (blobs are verified), a few MiB of read buffer: lamina.http
            self._session = new_session(
                connections=self._connections, connect_timeout=30, read_timeout=120
            )
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
            host, _, port = self._host(registry).rpartition(":")
            if not port.isdigit():
                host, port = self._host(registry), "443"
            tls = await speaks_tls(host.strip("[]"), int(port), _PROBE_TIMEOUT)
            self._schemes[registry] = ("https", False) if tls else ("http", False)

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
        if not self.verify_tls(registry):
            return False
        from lamina.http.tls import verified_context

        return verified_context()

    @staticmethod
    def _host(registry: str) -> str:
        # Docker Hub's API lives on registry-1.docker.io, not on docker.io.
        return "registry-1.docker.io" if registry == "docker.io" else registry

    def base_url(self, registry: str) -> str:
        return f"{self.scheme(registry)}://{self._host(registry)}"

    def _hop_tls(self, registry: str, url: str) -> SSLContext | bool:
        """``ssl=`` for a request to ``url``: the registry's own setting on its origin;
        elsewhere (a redirect to S3, an upload Location) verified unless that host is
        on loopback (``insecure`` names the registry, not the hosts it sends us to)."""
        if same_origin(url, self.base_url(registry)):
            return self.tls(registry)
        if is_loopback(urlsplit(url).netloc):
            return False
        from lamina.http.tls import verified_context

        return verified_context()

    def on_registry_origin(self, registry: str, url: str) -> bool:
        """Whether ``url`` is on the origin ``registry``'s credentials were given for."""
        return same_origin(url, self.base_url(registry))

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
    ) -> AsyncIterator[Response]:
        """Send until an answer in ``ok`` comes back (yielded, released on exit) or the
        retries run out (raised as a lamina error). ``what`` names the object for
        messages (``manifest x:1``). With ``retry=False`` nothing is retried but the
        401 answer, and a network failure propagates as aiohttp raised it.

        Redirects are followed here, not by aiohttp (see ``lamina.http.redirects``), at
        most ``MAX_REDIRECTS`` of them; the Authorization header goes only to the
        registry's own origin, so a hop elsewhere (S3, a CDN, an upload ``Location``
        on another host, the same host over plain http) never sees the credentials."""
        scope_list = tuple(scopes)
        ok_set = frozenset(ok)
        backoff = Backoff(self.attempts if retry else 0)
        answered_challenge = False
        first = (method, url, body)
        redirects = 0
        while True:
            on_origin = self.on_registry_origin(registry, url)
            send_headers = dict(headers or {})
            if on_origin:
                authorization = self.auth.authorization(registry, scope_list)
                if authorization:
                    send_headers["Authorization"] = authorization
            # lighthttp answers what it can (see the module docstring)
            light = (
                self.use_lighthttp
                and method in ("GET", "HEAD")
                and body is None
                and url.startswith("http://")
            )
            resp: Response
            try:
                if light:
                    send_headers.setdefault("User-Agent", USER_AGENT)
                    resp = await self.light.request(method, url, send_headers)
                else:
                    data: Any = body() if callable(body) else body
                    resp = await self.session.request(
                        method,
                        url,
                        headers=send_headers,
                        data=data,
                        ssl=self._hop_tls(registry, url),
                        allow_redirects=False,
                    )
            except network_errors() as exc:
                if not retry:
                    raise  # the caller resumes by itself (uploads)
                if is_certificate_error(exc):
                    raise _certificate_error(registry, exc) from exc
                # a name that does not resolve will not resolve in a second either
                if _is_dns_error(exc) or not backoff.more():
                    raise _network_error(method, url, exc) from exc
                await backoff.wait()
                method, url, body = first  # a redirect's target may have expired
                continue
            try:
                if resp.status in REDIRECT_STATUSES and resp.status not in ok_set:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise too_many_redirects(*first[:2])
                    hop = next_hop(method, url, resp.status, resp.headers.get("Location"))
                    method, url = hop.method, hop.url
                    if not hop.keep_body:
                        body = None
                    continue
                if resp.status == 401 and not answered_challenge and on_origin:
                    answered_challenge = True
                    challenge = resp.headers.get("WWW-Authenticate")
                    resp.release()
                    await self.auth.challenged(
                        self.session,
                        registry,
                        challenge,
                        scope_list,
                        self.tls(registry),
                        insecure=self._is_insecure(registry),
                    )
                    continue
                if resp.status in RETRY_STATUSES and backoff.more() and resp.status not in ok_set:
                    retry_after = resp.headers.get("Retry-After")
                    resp.release()
                    await backoff.wait(retry_after)
                    method, url, body = first
                    continue
                if resp.status not in ok_set:
                    raise await error_from_response(resp, method, registry, what)
                yield resp
                return
            finally:
                resp.release()


def _is_dns_error(exc: BaseException) -> bool:
    if isinstance(exc, CannotConnect):
        return exc.dns
    return _is_aiohttp_dns_error(exc)


def _network_error(method: str, url: str, exc: BaseException) -> ToolError:
    return network_error(
        method,
        url,
        exc,
        hint="check that the registry is up and reachable (is it HTTP? then use --insecure)",
    )


def _certificate_error(registry: str, exc: BaseException) -> ToolError:
    # Not retried: the same certificate comes back next time.
    return certificate_error(
        registry,
        exc,
        hint="add its CA to the system trust store (or SSL_CERT_FILE), or pass --insecure",
    )


async def error_from_response(resp: Response, method: str, registry: str, what: str) -> LaminaError:
    """A lamina error for a refusal, using the distribution-spec error body if any."""
    try:
        raw = await resp.content.read(_ERROR_BODY_MAX)
    except network_errors():
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
