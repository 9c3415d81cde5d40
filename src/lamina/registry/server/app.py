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
from lamina.registry.storage.api import RegistryStorage

log = logging.getLogger("lamina.registry.server")

# distribution expires uploads a week old; a day is plenty for any real push.
UPLOAD_TTL = 24 * 3600.0
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


def _make_dispatch(ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    storage_errors = (LaminaError, OSError)
    metrics = ctx.metrics
    authenticator = ctx.authenticator

    async def dispatch(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route: p.Route | None = None
        try:
            route = p.match(request.method, request.path, request.query_string)
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


def _metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def render(request: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return render


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
    limits: Limits | None = None,
) -> web.Application:
    """The registry as an aiohttp application over ``storage``.

    ``authenticator`` (see ``lamina.registry.authn``) is asked before every /v2 request;
    its token issuer, if any, is served at ``issuer.path``. ``metrics`` serves
    Prometheus text at ``/metrics``. Upload sessions idle for ``upload_ttl`` seconds are
    cancelled by a sweep every ``expiry_interval`` seconds (default: a quarter of the
    TTL, at most an hour). ``chunk_min_length`` is announced as ``OCI-Chunk-Min-Length``.
    ``limits`` (see ``limits.Limits``) bound what one request or client may hold.
    """
    ctx = Context(
        storage, authenticator, Metrics() if metrics else None, upload_ttl, chunk_min_length,
        limits=limits,
    )  # fmt: skip
    # Upload bodies stream through the handlers; this only caps what aiohttp itself
    # would buffer (it never reads a body we do not ask for).
    app = web.Application(client_max_size=p.MANIFEST_MAX + 1)
    app[CONTEXT_KEY] = ctx
    if ctx.metrics is not None:
        app.router.add_get("/metrics", _metrics_handler(ctx.metrics))
    if authenticator is not None and authenticator.issuer is not None:
        app.router.add_get(authenticator.issuer.path, _issuer_handler(authenticator.issuer, ctx))
    app.router.add_route("*", "/{tail:.*}", _make_dispatch(ctx))
    interval = expiry_interval if expiry_interval is not None else min(upload_ttl / 4, 3600.0)

    async def background(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_expiry_loop(ctx, max(interval, 0.05)))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.close()

    app.cleanup_ctx.append(background)
    return app


__all__ = ["BASE_HEADERS", "CONTEXT_KEY", "JSON", "UPLOAD_TTL", "make_app"]
