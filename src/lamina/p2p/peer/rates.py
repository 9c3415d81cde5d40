"""Rates and sizes as people write them, and the token bucket that enforces a rate.

Why not aiolimiter: its leaky bucket refuses an ``acquire`` larger than its capacity,
and a piece is sent whole with one ``sendfile`` (4-64 MiB, more than a bucket of a
fraction of a second holds). This bucket lets a taker go into debt and sleep it off,
so a whole piece can be paid for up front and still average out to the rate.
"""

from __future__ import annotations

import asyncio
import re
import time

from lamina.errors import InvalidArgument

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*(?:/s)?\s*$")

# Bits are decimal (network rates: tc's mbit = 10^6 bit); bytes are decimal with SI
# prefixes (KB, MB) and binary with IEC ones (KiB, MiB), as the units say.
_BIT_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def _parse(text: str, what: str, example: str, allow_bits: bool) -> float:
    match = _NUMBER.match(text)
    unit = match.group(2).lower() if match else ""
    if match and allow_bits and unit in _BIT_UNITS:
        return float(match.group(1)) * _BIT_UNITS[unit] / 8
    if match and unit in _BYTE_UNITS:
        return float(match.group(1)) * _BYTE_UNITS[unit]
    raise InvalidArgument(
        f"cannot read {what} {text!r}",
        hint=f"write a number and a unit, e.g. {example}",
    )


def parse_rate(text: str) -> float:
    """Bytes a second from ``50Mbit``, ``1.5Gbit/s``, ``10MiB``, ``800KB/s``."""
    return _parse(text, "the rate", "50Mbit, 1Gbit, 10MiB or 800KB (a second)", True)


def parse_size(text: str) -> int:
    """Bytes from ``20GiB``, ``500MB``, ``2G``, ``1048576``."""
    return int(_parse(text, "the size", "20GiB, 500MB, 2G or 1048576", False))


class TokenBucket:
    """``rate`` bytes a second with bursts of at most ``burst`` bytes; one bucket may be
    shared by every transfer of a process (a host-wide limit).

    It starts empty, so a limit holds from the first byte (a full bucket would let the
    first ``burst`` bytes through at line rate). Takers pay before they transfer: the
    tokens go negative, and each taker sleeps until its own debt is paid, which keeps
    concurrent takers in order without a queue.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise InvalidArgument(f"a rate limit must be positive, not {rate}")
        self.rate = rate
        # A tenth of a second of traffic (at least 64 KiB): small enough that the rate
        # holds over short windows, large enough that sleeps are not per packet.
        self.burst = burst if burst is not None else max(rate / 10, 64 << 10)
        self._tokens = 0.0
        self._stamp = time.monotonic()

    @classmethod
    def of(cls, rate: float | None) -> TokenBucket | None:
        """A bucket, or ``None`` (unlimited) for no rate or 0."""
        return cls(rate) if rate else None

    async def take(self, amount: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= amount
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


async def take(bucket: TokenBucket | None, amount: int) -> None:
    """Pay ``amount`` bytes to ``bucket`` if there is one."""
    if bucket is not None:
        await bucket.take(amount)
