"""The scheduler's state in Redis: several schedulers serve one swarm, a restart loses
nothing.

Layout (prefix ``lamina:p2p:``): ``hosts`` (hash: host id -> JSON with ``last_seen``),
``hoststats`` (hash: ``<host>|ok``/``<host>|failed`` counters, changed by HINCRBY so
schedulers never overwrite each other's counts), ``task:<task>`` (one JSON value per
task: its peers, bitfields, digests, blocklists), ``tasks`` (set of task ids) and
``hosttasks:<host>`` (set: the tasks a host has peers in, for expiry).

An event on a task runs under that task's lock (``SET lock:<task> <random> NX PX``,
released by a compare-and-delete script): load the hosts and the task, apply the pure
event, write the task back in one pipeline, unlock. If the event raises, nothing is
written, so a refused message changes nothing. Cost per event: about five round trips
(lock, two HGETALL, GET, pipelined writes + unlock) plus serializing the whole task,
which grows with its peers (measured in ``bench.p2p_sim --redis``); hosts are read
whole each time, fine for hundreds of hosts, not for tens of thousands.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lamina.errors import Conflict, ToolError
from lamina.p2p import tokens
from lamina.p2p.api import HOST_TTL, Clock, HostInfo
from lamina.p2p.scheduling.records import (
    HostRecord,
    TaskRecord,
    host_from_dict,
    host_to_dict,
    task_from_dict,
    task_to_dict,
)
from lamina.p2p.scheduling.scheduler import Scheduler

R = TypeVar("R")

PREFIX = "lamina:p2p:"
LOCK_MS = 5000
"""A lock outlives any event (milliseconds each) but not a crashed scheduler for long."""
LOCK_WAIT = 10.0
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _text(v: bytes | str) -> str:
    return v if isinstance(v, str) else v.decode()


def _dropper(host_id: str) -> Callable[[Scheduler], None]:
    return lambda s: s.drop_host(host_id)


class RedisStore:
    def __init__(
        self, client: aioredis.Redis, clock: Clock, swarm_key: bytes, back_to_source_limit: int
    ) -> None:
        self.r: aioredis.Redis = client
        self.clock = clock
        self.key = tokens.check_key(swarm_key)
        self.limit = back_to_source_limit
        self.rng = random.Random()
        # validate the limit once, as the memory store does
        Scheduler(clock, swarm_key, back_to_source_limit=back_to_source_limit)
        self._unlock = self.r.register_script(_UNLOCK)

    @classmethod
    async def connect(
        cls, url: str, clock: Clock, swarm_key: bytes, back_to_source_limit: int
    ) -> RedisStore:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ToolError(
                f"cannot reach Redis at {url}: {exc}",
                hint="start redis-server, or drop --redis to keep state in memory",
            ) from exc
        return cls(client, clock, swarm_key, back_to_source_limit)

    async def close(self) -> None:
        await self.r.aclose()

    # -- events -------------------------------------------------------------------------

    async def apply(self, task: str, event: Callable[[Scheduler], R]) -> R:
        lock = await self._lock(task)
        try:
            hosts = await self._hosts()
            tasks: dict[str, TaskRecord] = {}
            raw = await self.r.get(PREFIX + "task:" + task)
            if raw is not None:
                tasks[task] = task_from_dict(json.loads(raw))
                for p in tasks[task].peers.values():
                    if (h := hosts.get(p.host_id)) is not None:
                        h.peers.append((task, p.peer_id))
            before = {hid: (h.upload_ok, h.upload_failed) for hid, h in hosts.items()}
            sched = Scheduler(
                self.clock,
                self.key,
                back_to_source_limit=self.limit,
                rng=self.rng,
                hosts=hosts,
                tasks=tasks,
            )
            result = event(sched)
            pipe = self.r.pipeline(transaction=True)
            rec = tasks.get(task)
            if rec is not None:
                pipe.set(PREFIX + "task:" + task, json.dumps(task_to_dict(rec)))
                pipe.sadd(PREFIX + "tasks", task)
                for hid in {p.host_id for p in rec.peers.values()}:
                    pipe.sadd(PREFIX + "hosttasks:" + hid, task)
            else:
                pipe.delete(PREFIX + "task:" + task)
                pipe.srem(PREFIX + "tasks", task)
            for hid, (ok, failed) in before.items():
                h = hosts.get(hid)
                if h is None:
                    continue
                if h.upload_ok != ok:
                    pipe.hincrby(PREFIX + "hoststats", f"{hid}|ok", h.upload_ok - ok)
                if h.upload_failed != failed:
                    pipe.hincrby(PREFIX + "hoststats", f"{hid}|failed", h.upload_failed - failed)
            await pipe.execute()
            return result
        finally:
            await self._unlock(keys=[PREFIX + "lock:" + task], args=[lock])

    async def announce_host(self, host: HostInfo) -> None:
        rec = HostRecord(host, self.clock.now())
        await self.r.hset(PREFIX + "hosts", host.host_id, json.dumps(host_to_dict(rec)))

    async def expire_hosts(self) -> list[str]:
        deadline = self.clock.now() - HOST_TTL
        dead = [h for h, rec in (await self._hosts()).items() if rec.last_seen < deadline]
        for host_id in dead:
            members = await self.r.smembers(PREFIX + "hosttasks:" + host_id)
            for task in members:
                await self.apply(_text(task), _dropper(host_id))
            # drop_host removed it only from the loaded copy: now from Redis
            await self.r.hdel(PREFIX + "hosts", host_id)
            await self.r.delete(PREFIX + "hosttasks:" + host_id)
        return dead

    async def status(self) -> dict[str, Any]:
        hosts = await self._hosts()
        tasks: dict[str, TaskRecord] = {}
        for raw_id in await self.r.smembers(PREFIX + "tasks"):
            raw = await self.r.get(PREFIX + "task:" + _text(raw_id))
            if raw is not None:
                rec = task_from_dict(json.loads(raw))
                tasks[rec.task] = rec
        sched = Scheduler(
            self.clock, self.key, back_to_source_limit=self.limit, hosts=hosts, tasks=tasks
        )
        return sched.status()

    # -- plumbing -----------------------------------------------------------------------

    async def _hosts(self) -> dict[str, HostRecord]:
        raw_hosts = await self.r.hgetall(PREFIX + "hosts")
        stats = await self.r.hgetall(PREFIX + "hoststats")
        hosts: dict[str, HostRecord] = {}
        for raw_hid, raw in raw_hosts.items():
            hid = _text(raw_hid)
            rec = host_from_dict(json.loads(raw))
            rec.upload_ok = int(stats.get(f"{hid}|ok", 0))
            rec.upload_failed = int(stats.get(f"{hid}|failed", 0))
            hosts[hid] = rec
        return hosts

    async def _lock(self, task: str) -> str:
        token = secrets.token_hex(8)
        key = PREFIX + "lock:" + task
        loop = asyncio.get_running_loop()
        give_up = loop.time() + LOCK_WAIT
        delay = 0.001
        while not await self.r.set(key, token, nx=True, px=LOCK_MS):
            if loop.time() > give_up:
                raise Conflict(
                    f"task {task} stayed locked in Redis for {LOCK_WAIT:.0f} s",
                    hint="another scheduler is stuck; it frees the lock within 5 s of dying",
                )
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 0.05)
        return token
