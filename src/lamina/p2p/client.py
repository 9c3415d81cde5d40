"""The scheduler client a peer uses: :class:`lamina.p2p.api.SchedulerClient` over HTTP.

Every request carries the join token. A dropped connection or a 502/503/504 is tried
again with backoff (every scheduler call is safe to repeat: registering twice returns
the same peer, finishing or leaving twice is a no-op). Answers become
:mod:`lamina.errors`: 400 ``InvalidArgument``, 401 ``InvalidArgument`` (wrong swarm
key), 404 ``NotFound`` (an unknown peer: register again), 409 ``Conflict``, 5xx and
network failures ``ToolError``. A 409 ``UNKNOWN_HOST`` (a scheduler that restarted
without a store) is answered by announcing the host again and retrying once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from lamina.errors import Conflict, InvalidArgument, LaminaError, NotFound, ToolError
from lamina.http.errors import network_error, network_errors
from lamina.http.retry import Backoff
from lamina.p2p import tokens, wire
from lamina.p2p.api import FinishOutcome, HostInfo, Report, Schedule

_RETRY = frozenset({502, 503, 504})


class SchedulerForgotHost(Conflict):
    """409 ``UNKNOWN_HOST``: the scheduler does not know (any more) the host."""


class HttpSchedulerClient:
    def __init__(
        self,
        base_url: str,
        swarm_key: bytes,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.auth = {"Authorization": f"Bearer {tokens.join_token(tokens.check_key(swarm_key))}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.attempts = attempts
        self._session = session
        self._own = session is None
        self._hosts: dict[str, HostInfo] = {}

    async def __aenter__(self) -> HttpSchedulerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
        self._session = None

    # -- SchedulerClient ----------------------------------------------------------------

    async def announce_host(self, host: HostInfo) -> None:
        self._hosts[host.host_id] = host
        await self._call("/v1/hosts", wire.host_to_json(host))

    async def register(
        self, task: str, peer_id: str, host: HostInfo, size: int, source: str
    ) -> Schedule:
        if host.host_id not in self._hosts:
            await self.announce_host(host)
        body = wire.registration_to_json(wire.Registration(peer_id, host.host_id, size, source))
        return wire.schedule_from_json(
            await self._call(f"/v1/tasks/{task}/peers", body, host_id=host.host_id)
        )

    async def report(self, task: str, report: Report) -> Schedule:
        return wire.schedule_from_json(
            await self._call(f"/v1/tasks/{task}/report", wire.report_to_json(report))
        )

    async def finish(
        self, task: str, peer_id: str, outcome: FinishOutcome, reason: str = ""
    ) -> None:
        body = wire.finish_to_json(wire.Finish(peer_id, outcome, reason))
        await self._call(f"/v1/tasks/{task}/finish", body)

    async def leave(self, task: str, peer_id: str) -> None:
        await self._call(f"/v1/tasks/{task}/leave", {"peer_id": peer_id})

    async def status(self) -> Mapping[str, Any]:
        answer = await self._call("/v1/status", None)
        if not isinstance(answer, dict):
            raise ToolError(f"GET {self.base}/v1/status did not answer a JSON object")
        return answer

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, path: str, body: object, *, host_id: str = "") -> Any:
        try:
            return await self._send(path, body)
        except SchedulerForgotHost:
            host = self._hosts.get(host_id)
            if host is None:
                raise
            await self.announce_host(host)
            return await self._send(path, body)

    async def _send(self, path: str, body: object) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        method = "GET" if body is None else "POST"
        url = self.base + path
        backoff = Backoff(attempts=self.attempts - 1)
        while True:
            try:
                async with self._session.request(
                    method, url, json=body, headers=self.auth, timeout=self.timeout
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except network_errors() as exc:
                if backoff.more():
                    await backoff.wait()
                    continue
                raise network_error(
                    method, url, exc, hint="check that the scheduler is up (--scheduler URL)"
                ) from exc
            if status in _RETRY and backoff.more():
                await backoff.wait(retry_after)
                continue
            if status == 204:
                return None
            if status < 300:
                return wire.parse(raw)
            raise _error(method, url, status, raw)


def _error(method: str, url: str, status: int, raw: bytes) -> LaminaError:
    try:
        code, message, hint = wire.error_from_json(wire.parse(raw))
    except InvalidArgument:
        code, message, hint = "UNKNOWN", raw[:200].decode(errors="replace"), None
    text = f"scheduler: {method} {url}: {status} {message or code}"
    exc: LaminaError
    if status == 401:
        exc = InvalidArgument(text, hint=hint or "every peer needs the swarm's --swarm-key")
    elif status == 404:
        exc = NotFound(text, hint=hint or "register the peer again")
    elif status == 409 and code == "UNKNOWN_HOST":
        exc = SchedulerForgotHost(text, hint=hint)
    elif status == 409:
        exc = Conflict(text, hint=hint)
    elif status < 500:
        exc = InvalidArgument(text, hint=hint)
    else:
        exc = ToolError(text, hint=hint or "the scheduler failed; see its log")
    return exc
