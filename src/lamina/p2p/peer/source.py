"""The back-to-source fetch: the upstream blob streamed into the task's piece file.

Bytes are written in order at their offsets as they arrive; each piece's sha256 (and
the whole blob's) is computed on the way, in a worker thread with the write, so the
event loop never hashes. A piece is published (served to children, reported to the
scheduler) as soon as its last byte is on disk. Pieces already held (a resumed task)
are hashed but not rewritten: the digest list must still cover every piece in order.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lamina.errors import LaminaError, SizeMismatch, ToolError
from lamina.http import network_error, network_errors
from lamina.p2p.peer.counters import Counters
from lamina.p2p.peer.rates import TokenBucket, take
from lamina.p2p.peer.storage import PieceStore, TaskFile

if TYPE_CHECKING:
    import aiohttp

_CHUNK = 1 << 20


def _failures() -> tuple[type[BaseException], ...]:
    """What a network call can raise that is not a bug: lamina's errors, the OS's, aiohttp's."""
    return (LaminaError, OSError, ValueError, KeyError, *network_errors())


class _Hashing:
    """The state carried from chunk to chunk (touched only in worker threads, one call
    at a time)."""

    def __init__(self, store: PieceStore, tf: TaskFile) -> None:
        self.store = store
        self.tf = tf
        self.whole = hashlib.sha256()
        self.piece = hashlib.sha256()
        self.n = 0
        self.offset = 0

    def feed(self, chunk: bytes) -> list[tuple[int, str, bool]]:
        """Hash and write ``chunk``; the pieces it finished: (n, hex, newly written)."""
        tf = self.tf
        finished: list[tuple[int, str, bool]] = []
        self.whole.update(chunk)
        view = memoryview(chunk)
        while view:
            _, end = tf.span(self.n)
            part = view[: end - self.offset]
            self.piece.update(part)
            if not tf.has(self.n):
                tf.write_at(self.offset, part)
            self.offset += len(part)
            view = view[len(part) :]
            if self.offset == end:
                fresh = tf.persist_bit(self.n, self.store.durable)
                finished.append((self.n, self.piece.hexdigest(), fresh))
                self.piece = hashlib.sha256()
                self.n += 1
        return finished


async def fetch_from_source(
    session: aiohttp.ClientSession,
    store: PieceStore,
    tf: TaskFile,
    url: str,
    headers: Mapping[str, str],
    *,
    counters: Counters,
    limiter: TokenBucket | None = None,
    on_piece: Callable[[int, str], None] = lambda n, hexd: None,
) -> str:
    """Stream ``url`` into ``tf``; returns the whole blob's sha256 hex. ``on_piece(n,
    hex)`` is called for every piece in order, once it is on disk."""
    state = _Hashing(store, tf)
    try:
        async with session.get(url, headers=dict(headers)) as resp:
            if resp.status != 200:
                raise ToolError(
                    f"GET {url} answered {resp.status} for {tf.task}",
                    hint="check the upstream and the client's credentials",
                )
            length = resp.content_length
            if length is not None and length != tf.size:
                raise SizeMismatch(f"{url} has {length} bytes; {tf.task} has {tf.size}")
            got = 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                got += len(chunk)
                if got > tf.size:
                    raise SizeMismatch(f"{url} sent more than the {tf.size} bytes of {tf.task}")
                await take(limiter, len(chunk))
                counters.bytes_from_source += len(chunk)
                for n, hexd, fresh in await asyncio.to_thread(state.feed, chunk):
                    if fresh:
                        tf.mark(n)
                    on_piece(n, hexd)
            if got != tf.size:
                raise SizeMismatch(f"{url} sent {got} of the {tf.size} bytes of {tf.task}")
    except LaminaError:
        raise
    except _failures() as exc:
        raise network_error("GET", url, exc) from exc
    return state.whole.hexdigest()
