"""The aiohttp application: one handler matches every /v2 request with
``protocol.match``, asks the authenticator, runs the endpoint's handler and turns any
refusal into the spec's status, headers and JSON body. Also ``/metrics`` and the token
issuer, and the periodic expiry of stale upload sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from lamina.errors import LaminaError
from lamina.registry import protocol as p
from lamina.registry import routes as r
from lamina.registry.authn.api import Authenticator, TokenIssuer
from lamina.registry.server import blob_handlers, manifest_handlers, upload_handlers
from lamina.registry.server.context import (
    BASE_HEADERS,
    BYTES_IN,
    BYTES_OUT,
    JSON,
    Context,
    as_registry_error,
    error_response,
    internal_error,
)
from lamina.registry.server.limits import Limits
from lamina.registry.server.metrics import CONTENT_TYPE, Metrics
from lamina.registry.storage.api import RegistryStorage, SweepsTemporaries

log = logging.getLogger("lamina.registry.server")

# distribution expires uploads a week old; a day is plenty for any real push.
UPLOAD_TTL = 24 * 3600.0
# Temporaries older than this are a killed writer's (a live write_atomic takes
# milliseconds); younger ones may belong to another server sharing the store.
TEMPORARY_AGE = 3600.0
CONTEXT_KEY = web.AppKey("lamina_registry_context", Context)

Handler = Callable[[Context, web.Request, p.Route], Awaitable[web.StreamResponse]]

HANDLERS: dict[str, Handler] = {
    r.BASE: manifest_handlers.base,
    r.CATALOG: manifest_handlers.catalog,
    r.BLOB: blob_handlers.blob_get,
    r.BLOB_DELETE: blob_handlers.blob_delete,
    r.MANIFEST: manifest_handlers.manifest_get,
    r.MANIFEST_PUT: manifest_handlers.manifest_put,
    r.MANIFEST_DELETE: manifest_handlers.manifest_delete,
    r.TAGS: manifest_handlers.tags_list,
    r.REFERRERS: manifest_handlers.referrers,
    r.UPLOAD_START: upload_handlers.upload_start,
    r.UPLOAD_MONOLITHIC: upload_handlers.upload_monolithic,
    r.UPLOAD_MOUNT: upload_handlers.upload_mount,
    r.UPLOAD_PATCH: upload_handlers.upload_patch,
    r.UPLOAD_FINISH: upload_handlers.upload_finish,
    r.UPLOAD_STATUS: upload_handlers.upload_status,
    r.UPLOAD_CANCEL: upload_handlers.upload_cancel,
}

# Metric label of a request that matched no route (bounded: never the raw path).
_UNMATCHED = "unmatched"
_REASON_MAX = 200


def _one_line(text: str) -> str:
    """A parser message as one bounded line (aiohttp's spans lines, with a caret line)."""
    parts = [line.strip() for line in text.splitlines()]
    line = " ".join(part for part in parts if part and set(part) != {"^"})
    return line[:_REASON_MAX]


class _BadRequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's connection logger, minus tracebacks for requests that do not parse.

    aiohttp logs every malformed request (bad method, bad header, bad URL, TLS on the
    plain port) with ``logger.exception``: a traceback per scanner probe. Those become
    one warning line naming the peer and the reason; anything else (a handler bug) keeps
    its traceback.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = args[0] if args else None
            log.warning("bad request from %s: %s", peer or "?", _one_line(exc.message))
            return
        super().log(level, msg, *args, **kwargs)  # type: ignore[arg-type]


_SERVER_LOG = _BadRequestLog(logging.getLogger("aiohttp.server"), {})


def _make_dispatch(ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    storage_errors = (LaminaError, OSError)
    metrics = ctx.metrics
    authenticator = ctx.authenticator

    async def dispatch(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route: p.Route | None = None
        try:
            try:
                route = p.match(request.method, request.path, request.query_string)
            except p.RegistryError as exc:
                # A path no endpoint takes, or a bad name/digest in it: one line, so a
                # scan shows in the log without a traceback.
                log.warning(
                    "refused %s %s from %s: %s",
                    request.method,
                    request.path[:_REASON_MAX],
                    request.remote,
                    exc.code,
                )
                raise
            if authenticator is not None:
                await ctx.call(
                    authenticator.authenticate,
                    request.headers.get("Authorization"),
                    p.required_scopes(route),
                )
            resp = await HANDLERS[route.endpoint](ctx, request, route)
        except storage_errors as exc:
            if isinstance(exc, OSError):
                # A connection the peer dropped mid-transfer, or a backend failure.
                log.warning("request %s %s failed: %s", request.method, request.path, exc)
                resp = internal_error(LaminaError(f"I/O error: {exc}"))
            else:
                err = as_registry_error(exc, route)
                if err is None:
                    log.warning("request %s %s failed: %s", request.method, request.path, exc)
                    resp = internal_error(exc)
                else:
                    resp = error_response(err)
        if metrics is not None:
            metrics.record(
                request.method,
                route.endpoint if route is not None else _UNMATCHED,
                resp.status,
                time.perf_counter() - started,
                bytes_in=request.get(BYTES_IN, 0),
                bytes_out=request.get(BYTES_OUT, 0),
            )
        return resp

    return dispatch


def _issuer_handler(
    issuer: TokenIssuer, ctx: Context
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def token(request: web.Request) -> web.StreamResponse:
        scopes = tuple(request.query.getall("scope", ()))
        try:
            body = await ctx.call(
                issuer.issue,
                request.headers.get("Authorization"),
                request.query.get("service"),
                scopes,
            )
        except p.RegistryError as exc:
            return error_response(exc)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    return token


# /metrics tells how busy every endpoint is: with auth on it needs what the catalog
# needs (registry-wide read, ``registry:catalog:*``), the same credentials as /v2.
METRICS_SCOPES = (p.Scope("catalog", ("*",), "registry"),)


def _metrics_handler(ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    metrics = ctx.metrics
    authenticator = ctx.authenticator
    assert metrics is not None

    async def render(request: web.Request) -> web.StreamResponse:
        if authenticator is not None:
            try:
                await ctx.call(
                    authenticator.authenticate,
                    request.headers.get("Authorization"),
                    METRICS_SCOPES,
                )
            except p.RegistryError as exc:
                return error_response(exc)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return render


def _startup_sweep(ctx: Context, temporary_age: float) -> None:
    """What a server killed with SIGKILL left: stale temporaries, and sessions idle past
    the TTL (the periodic expiry would only get to them a quarter TTL later)."""
    storage = ctx.storage
    if isinstance(storage, SweepsTemporaries):
        swept = storage.sweep_temporaries(temporary_age)
        if swept:
            log.info("removed %d stale temporary file(s) a killed writer left", len(swept))
    count = upload_handlers.expire(ctx, time.time())
    if count:
        log.info("expired %d stale upload session(s)", count)


async def _expiry_loop(ctx: Context, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            count = await ctx.call(upload_handlers.expire, ctx, time.time())
        except (LaminaError, OSError) as exc:
            log.warning("upload expiry failed: %s", exc)
            continue
        if count:
            log.info("expired %d stale upload session(s)", count)


def make_app(
    storage: RegistryStorage,
    *,
    authenticator: Authenticator | None = None,
    metrics: bool = True,
    upload_ttl: float = UPLOAD_TTL,
    expiry_interval: float | None = None,
    chunk_min_length: int = 0,
    temporary_age: float = TEMPORARY_AGE,
    limits: Limits | None = None,
) -> web.Application:
    """The registry as an aiohttp application over ``storage``.

    ``authenticator`` (see ``lamina.registry.authn``) is asked before every /v2 request;
    its token issuer, if any, is served at ``issuer.path``. ``metrics`` serves
    Prometheus text at ``/metrics``, behind the authenticator when there is one
    (scope ``registry:catalog:*``, like the catalog). Upload sessions idle for
    ``upload_ttl`` seconds are cancelled by a sweep every ``expiry_interval`` seconds
    (default: a quarter of the TTL, at most an hour). ``chunk_min_length`` is
    announced as ``OCI-Chunk-Min-Length``. At start-up, temporaries older than
    ``temporary_age`` seconds that killed writers left are swept (never a live upload).
    ``limits`` (see ``limits.Limits``) bound what one request or client may hold.
    """
    ctx = Context(
        storage, authenticator, Metrics() if metrics else None, upload_ttl, chunk_min_length,
        limits=limits,
    )  # fmt: skip
    # Upload bodies stream through the handlers; this only caps what aiohttp itself
    # would buffer (it never reads a body we do not ask for).
    app = web.Application(client_max_size=p.MANIFEST_MAX + 1, handler_args={"logger": _SERVER_LOG})
    app[CONTEXT_KEY] = ctx
    if ctx.metrics is not None:
        app.router.add_get("/metrics", _metrics_handler(ctx))
    if authenticator is not None and authenticator.issuer is not None:
        app.router.add_get(authenticator.issuer.path, _issuer_handler(authenticator.issuer, ctx))
    app.router.add_route("*", "/{tail:.*}", _make_dispatch(ctx))
    interval = expiry_interval if expiry_interval is not None else min(upload_ttl / 4, 3600.0)

    async def background(app: web.Application) -> AsyncIterator[None]:
        try:
            await ctx.call(_startup_sweep, ctx, temporary_age)
        except (LaminaError, OSError) as exc:
            log.warning("start-up sweep failed: %s", exc)
        task = asyncio.create_task(_expiry_loop(ctx, max(interval, 0.05)))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.close()

    app.cleanup_ctx.append(background)
    return app


__all__ = ["BASE_HEADERS", "CONTEXT_KEY", "JSON", "UPLOAD_TTL", "make_app"]
