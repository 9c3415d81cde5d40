"""Bounded concurrency for transfers: a number of blob jobs at once, failing as one.

A pull or push runs one job per blob; a fixed number at once keeps the connections and
the disk busy without opening one stream per layer. The first failure cancels the rest,
and the caller sees that failure itself (a NotFound, a DigestMismatch), not an
ExceptionGroup that the CLI would have to unpack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


async def run_bounded(jobs: Sequence[Callable[[], Awaitable[None]]], parallel: int) -> None:
    """Run ``jobs`` with at most ``parallel`` at once; the first failure cancels the
    rest and is raised as itself (not as an ExceptionGroup)."""
    semaphore = asyncio.Semaphore(max(1, parallel))

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(one(job))
    except BaseExceptionGroup as group_error:
        raise _first(group_error) from None


def _first(error: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in error.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return error.exceptions[0]
