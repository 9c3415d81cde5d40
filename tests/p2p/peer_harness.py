"""Real piece servers on loopback for the peer tests: stores holding real files, each
behind its own aiohttp server with the peer's piece routes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from lamina.p2p import api, pieces, tokens
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket
from lamina.p2p.peer.server import UploadGate, add_piece_routes
from lamina.p2p.peer.storage import PieceStore, TaskFile

KEY = b"k" * 32


@dataclass
class Blob:
    data: bytes
    task: str
    digests: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.data)


def make_blob(size: int) -> Blob:
    data = os.urandom(size)
    length = pieces.piece_length(size)
    digests = tuple(
        hashlib.sha256(data[s:e]).hexdigest()
        for s, e in (pieces.piece_span(size, n, length) for n in range(pieces.piece_count(size)))
    )
    return Blob(data, "sha256:" + hashlib.sha256(data).hexdigest(), digests)


def fill(store: PieceStore, blob: Blob, numbers: range | list[int] | None = None) -> TaskFile:
    """Put ``numbers`` of the blob's pieces (all: the finished blob) into ``store``."""
    tf = store.open_task(blob.task, blob.size)
    for n in range(tf.count) if numbers is None else numbers:
        s, e = tf.span(n)
        store.write_piece(tf, n, blob.data[s:e])
        tf.mark(n)
    if numbers is None:
        store.verify(tf)
        store.completed(tf)
    return tf


def token(task: str) -> str:
    return tokens.mint(KEY, task, time.time())


def schedule(blob: Blob, parents: list[Piecer], digests: bool = True) -> api.Schedule:
    return api.Schedule(
        "parents",
        blob.size,
        pieces.piece_length(blob.size),
        parents=tuple(p.parent for p in parents),
        digests=blob.digests if digests else (),
        token=token(blob.task),
    )


@dataclass
class Piecer:
    """One peer's piece server on loopback."""

    store: PieceStore
    name: str
    gate: UploadGate = field(default_factory=UploadGate)
    counters: Counters = field(default_factory=Counters)
    runner: web.AppRunner | None = None
    addr: str = ""

    @property
    def parent(self) -> api.Parent:
        return api.Parent(f"{self.name}/task", self.name, self.addr)

    async def start(self) -> None:
        app = web.Application()
        add_piece_routes(app, self.store, KEY, self.gate, counters=self.counters)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.addr = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@asynccontextmanager
async def piecers(
    root: Path, *names: str, limit: float | None = None, slots: int = 32
) -> AsyncIterator[list[Piecer]]:
    servers = [
        Piecer(
            PieceStore(root / name, durable=False),
            name,
            UploadGate(slots, TokenBucket.of(limit)),
        )
        for name in names
    ]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()
            server.store.close()
