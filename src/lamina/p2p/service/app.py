"""The scheduler's routes (docs/p2p.md): join-token auth, JSON in and out, metrics.

Every request but ``/metrics`` needs ``Authorization: Bearer <join token>``. Errors
are ``{"error", "message", "hint"}``: 400 bad input, 401 no or bad join token, 404 an
unknown peer (``UNKNOWN_PEER``: register again), 409 an unknown host
(``UNKNOWN_HOST``: announce it first) or a conflicting state (``CONFLICT``).

When the core says so, the seed host is asked to go back to source
(``POST {seed}/p2p/v1/tasks/{task}/seed`` with the join token) in the background; if
that fails the core frees the seed's slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from lamina.errors import Conflict, InvalidArgument, LaminaError, NotFound
from lamina.http.errors import network_errors
from lamina.p2p import tokens, wire
from lamina.p2p.scheduling.scheduler import Decision, SeedTrigger, UnknownHost, UnknownPeer
from lamina.p2p.service.stores import StateStore

log = logging.getLogger("lamina.p2p.scheduler")

MAX_BODY = 8 << 20
"""A report of every digest of the largest blob (131,072 x 67 bytes) fits."""
SEED_TIMEOUT = ClientTimeout(total=10)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, exc: LaminaError) -> web.Response:
    return web.json_response(wire.error_to_json(code, exc.message, exc.hint), status=status)


class SchedulerApp:
    def __init__(self, store: StateStore, swarm_key: bytes) -> None:
        self.store = store
        self.key = tokens.check_key(swarm_key)
        self.join = tokens.join_token(self.key)
        self.requests: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.seed_triggers: Counter[str] = Counter()
        self.bytes_from_source = 0
        self.bytes_from_peers = 0
        self.decision_seconds = 0.0
        self.decisions = 0
        self._background: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None

    def make(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.router.add_post("/v1/hosts", self.hosts)
        app.router.add_post("/v1/tasks/{task}/peers", self.register)
        app.router.add_post("/v1/tasks/{task}/report", self.report)
        app.router.add_post("/v1/tasks/{task}/finish", self.finish)
        app.router.add_post("/v1/tasks/{task}/leave", self.leave)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/metrics", self.metrics)
        app.on_cleanup.append(self._cleanup)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        self.requests[f"{request.method} {name}"] += 1
        if request.path != "/metrics":
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not tokens.check_join(self.key, auth[7:]):
                return _error(
                    401,
                    "UNAUTHORIZED",
                    InvalidArgument(
                        "no valid join token",
                        hint="send Authorization: Bearer <join token> of the swarm key",
                    ),
                )
        try:
            return await handler(request)
        except UnknownHost as exc:
            return _error(409, "UNKNOWN_HOST", exc)
        except UnknownPeer as exc:
            return _error(404, "UNKNOWN_PEER", exc)
        except NotFound as exc:
            return _error(404, "NOT_FOUND", exc)
        except Conflict as exc:
            return _error(409, "CONFLICT", exc)
        except InvalidArgument as exc:
            return _error(400, "BAD_REQUEST", exc)

    async def _body(self, request: web.Request) -> object:
        return wire.parse(await request.read())

    def _task(self, request: web.Request) -> str:
        return wire.check_task(request.match_info["task"])

    # -- routes -------------------------------------------------------------------------

    async def hosts(self, request: web.Request) -> web.Response:
        await self.store.announce_host(wire.host_from_json(await self._body(request)))
        return web.Response(status=204)

    async def register(self, request: web.Request) -> web.Response:
        task = self._task(request)
        r = wire.registration_from_json(await self._body(request))
        t0 = time.perf_counter()
        decision = await self.store.apply(
            task, lambda s: s.register(task, r.peer_id, r.host_id, r.size, r.source)
        )
        return self._answer(decision, t0)

    async def report(self, request: web.Request) -> web.Response:
        task = self._task(request)
        rep = wire.report_from_json(await self._body(request))
        t0 = time.perf_counter()
        decision = await self.store.apply(task, lambda s: s.report(task, rep))
        self.bytes_from_source += rep.bytes_from_source
        self.bytes_from_peers += rep.bytes_from_peers
        return self._answer(decision, t0)

    async def finish(self, request: web.Request) -> web.Response:
        task = self._task(request)
        f = wire.finish_from_json(await self._body(request))
        await self.store.apply(task, lambda s: s.finish(task, f.peer_id, f.outcome, f.reason))
        if f.outcome != "succeeded":
            log.info("peer %s of %s finished %s: %s", f.peer_id, task, f.outcome, f.reason)
        return web.Response(status=204)

    async def leave(self, request: web.Request) -> web.Response:
        task = self._task(request)
        peer_id = wire.leave_from_json(await self._body(request))
        await self.store.apply(task, lambda s: s.leave(task, peer_id))
        return web.Response(status=204)

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.store.status())

    async def metrics(self, request: web.Request) -> web.Response:
        st = await self.store.status()
        peers: Counter[str] = Counter()
        tasks: Counter[str] = Counter()
        for t in st["tasks"]:
            tasks[t["state"]] += 1
            for p in t["peers"]:
                peers[p["state"]] += 1
        lines = [
            "# TYPE lamina_p2p_hosts gauge",
            f"lamina_p2p_hosts {len(st['hosts'])}",
            "# TYPE lamina_p2p_tasks gauge",
            *(f'lamina_p2p_tasks{{state="{k}"}} {v}' for k, v in sorted(tasks.items())),
            "# TYPE lamina_p2p_peers gauge",
            *(f'lamina_p2p_peers{{state="{k}"}} {v}' for k, v in sorted(peers.items())),
            "# TYPE lamina_p2p_bytes_from_source_total counter",
            f"lamina_p2p_bytes_from_source_total {self.bytes_from_source}",
            "# TYPE lamina_p2p_bytes_from_peers_total counter",
            f"lamina_p2p_bytes_from_peers_total {self.bytes_from_peers}",
            "# TYPE lamina_p2p_scheduler_requests_total counter",
            *(
                f'lamina_p2p_scheduler_requests_total{{route="{k}"}} {v}'
                for k, v in sorted(self.requests.items())
            ),
            "# TYPE lamina_p2p_scheduler_decisions_total counter",
            *(
                f'lamina_p2p_scheduler_decisions_total{{action="{k}"}} {v}'
                for k, v in sorted(self.actions.items())
            ),
            "# TYPE lamina_p2p_scheduler_decision_seconds summary",
            f"lamina_p2p_scheduler_decision_seconds_sum {self.decision_seconds:.6f}",
            f"lamina_p2p_scheduler_decision_seconds_count {self.decisions}",
            "# TYPE lamina_p2p_scheduler_seed_triggers_total counter",
            *(
                f'lamina_p2p_scheduler_seed_triggers_total{{result="{k}"}} {v}'
                for k, v in sorted(self.seed_triggers.items())
            ),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # -- decisions and the seed trigger -------------------------------------------------

    def _answer(self, decision: Decision, t0: float) -> web.Response:
        self.decision_seconds += time.perf_counter() - t0
        self.decisions += 1
        self.actions[decision.schedule.action] += 1
        if decision.seed is not None:
            job = asyncio.ensure_future(self._trigger(decision.seed))
            self._background.add(job)
            job.add_done_callback(self._background.discard)
        return web.json_response(wire.schedule_to_json(decision.schedule))

    async def _trigger(self, seed: SeedTrigger) -> None:
        url = f"{seed.host.addr.rstrip('/')}/p2p/v1/tasks/{seed.task}/seed"
        try:
            if self._session is None:
                self._session = ClientSession(timeout=SEED_TIMEOUT)
            async with self._session.post(
                url,
                json={"size": seed.size, "source": seed.source},
                headers={"Authorization": f"Bearer {self.join}"},
            ) as resp:
                await resp.read()
                ok = resp.status < 300
                why = f"answered {resp.status}"
        except network_errors() as exc:
            ok, why = False, str(exc) or type(exc).__name__
        self.seed_triggers["ok" if ok else "failed"] += 1
        if ok:
            log.info("asked seed %s to fetch %s", seed.host.host_id, seed.task)
            return
        log.warning(
            "seed %s could not be asked to fetch %s: %s; its slot is free again",
            seed.host.host_id,
            seed.task,
            why,
        )
        task, host_id = seed.task, seed.host.host_id
        await self.store.apply(task, lambda s: s.seed_failed(task, host_id))

    async def _cleanup(self, app: web.Application) -> None:
        for job in list(self._background):
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def status_of(app: SchedulerApp) -> dict[str, Any]:
    """Counters of this process (what ``/metrics`` adds to the store's state)."""
    return {
        "requests": dict(app.requests),
        "actions": dict(app.actions),
        "bytes_from_source": app.bytes_from_source,
        "bytes_from_peers": app.bytes_from_peers,
    }
