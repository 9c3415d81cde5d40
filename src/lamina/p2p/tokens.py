"""Swarm tokens: who may fetch pieces of a task, and who may talk to the scheduler.

Every scheduler and peer of one swarm holds the same secret key (``--swarm-key
FILE``). A peer proves membership to the scheduler with :func:`join_token`; the
scheduler hands each registered peer a short-lived :func:`mint` token for one task,
which that peer presents to its parents (``Authorization: Swarm <token>``); a parent
checks it with :func:`check` and serves nothing without it. A host outside the swarm
has no key, so it can neither register nor forge a task token.

Tokens are ``v1.<expiry unix seconds>.<hex HMAC-SHA256(key, "task|" task "|" expiry)>``.
"""

from __future__ import annotations

import hashlib
import hmac

from lamina.errors import InvalidArgument

VERSION = "v1"
TASK_TOKEN_TTL = 300.0
"""Seconds a task token lives: long enough to survive a scheduler restart, short enough
that a leaked one soon stops working. Peers get a fresh one with every schedule."""
MIN_KEY_BYTES = 16


def check_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise InvalidArgument(
            f"the swarm key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}",
            hint="make one with: head -c 32 /dev/urandom > swarm.key",
        )
    return key


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def mint(key: bytes, task: str, now: float, ttl: float = TASK_TOKEN_TTL) -> str:
    """A token for ``task`` valid until ``now + ttl`` (wall-clock seconds)."""
    expiry = int(now + ttl)
    return f"{VERSION}.{expiry}.{_mac(key, f'task|{task}|{expiry}')}"


def check(key: bytes, task: str, token: str, now: float) -> bool:
    """Whether ``token`` lets its holder fetch pieces of ``task`` at ``now``."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
        return False
    expiry = int(parts[1])
    if expiry < now:
        return False
    return hmac.compare_digest(parts[2], _mac(key, f"task|{task}|{expiry}"))


def join_token(key: bytes) -> str:
    """What a peer sends the scheduler (``Authorization: Bearer <join token>``)."""
    return _mac(key, "join")


def check_join(key: bytes, presented: str) -> bool:
    return hmac.compare_digest(presented, join_token(key))
