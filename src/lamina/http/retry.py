"""When to send an HTTP request again, and how long to wait first.

RFC 9110 section 9.2.2: GET, HEAD, PUT and DELETE are idempotent, so a client may send
them again after a dropped connection. 429 (RFC 6585) and 5xx gateway or overload
answers are worth another try; ``Retry-After`` (RFC 9110 section 10.2.3) is honoured
when given in seconds, up to 30.
"""

from __future__ import annotations

import asyncio
import random

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_MAX = 30.0


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
            delay = min(max(delay, float(retry_after)), _RETRY_AFTER_MAX)
        self.tried += 1
        await asyncio.sleep(delay)
