"""htpasswd files with bcrypt hashes (Apache ``htpasswd -B``; distribution's htpasswd
auth reads the same files).

Only bcrypt (``$2y$``, ``$2b$``, ``$2a$``) is accepted: the other kinds htpasswd can
write (``$apr1$`` MD5, ``{SHA}``, crypt, plain text) are fast hashes, and a file holding
one is refused as a whole with a message naming the line, so nobody is silently locked
out. Checking a password is deliberately slow (bcrypt); callers on an event loop run
:meth:`Htpasswd.verify` in a thread.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt

from lamina.atomic import write_atomic
from lamina.errors import InvalidArgument, InvalidFormat, NotFound, Unsupported

_log = logging.getLogger(__name__)

# $2<minor>$<cost>$<22 salt chars><31 hash chars> (the OpenBSD bcrypt string format).
_BCRYPT_RE = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_FILE_MAX = 16 << 20  # a million users is still far below this
_USER_MAX = 256
# bcrypt reads only the first 72 bytes of a password; Apache htpasswd and Go's bcrypt
# (which distribution uses) truncate silently, the bcrypt module refuses: truncate
# ourselves so files made by those tools keep working for long passwords.
_BCRYPT_KEY_MAX = 72
DEFAULT_COST = 10  # Go's bcrypt.DefaultCost, what distribution's tooling writes
# A Basic-auth client sends its password with every request and a push is dozens of
# requests: remember a password that checked out for a minute instead of paying bcrypt
# (~0.1-1 s here) each time. Keys are HMACs under a per-process secret, so the cache
# holds nothing that can be checked offline; a file reload empties it.
VERIFIED_TTL = 60.0
_VERIFIED_MAX = 4096


def _kind(hashed: bytes) -> str:
    """A name for a hash that is not bcrypt, for the error message."""
    if hashed.startswith(b"$apr1$"):
        return "Apache MD5 ($apr1$)"
    if hashed.startswith(b"{SHA}"):
        return "SHA-1 ({SHA})"
    if hashed.startswith((b"$1$", b"$5$", b"$6$", b"$y$", b"$7$")):
        return f"crypt(3) ({hashed.split(b'$')[1].decode('ascii', 'replace')})"
    if hashed.startswith(b"$2"):
        return "malformed bcrypt"
    if len(hashed) == 13:
        return "DES crypt (or plain text)"
    return "unknown or plain-text"


def parse_htpasswd(data: bytes, origin: str = "htpasswd") -> dict[str, bytes]:
    """``{user: bcrypt hash}`` from an htpasswd file's bytes.

    Blank lines and lines starting with ``#`` are skipped (as distribution does). A
    line without ``:``, a duplicate user or a hash that is not bcrypt is an error naming
    ``origin`` and the line number.
    """
    entries: dict[str, bytes] = {}
    for lineno, raw_line in enumerate(data.split(b"\n"), 1):
        line = raw_line.strip()
        if not line or line.startswith(b"#"):
            continue
        user_b, sep, hashed = line.partition(b":")
        try:
            user = user_b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFormat(f"{origin}:{lineno}: user name is not UTF-8") from exc
        if not sep or not user or len(user_b) > _USER_MAX:
            raise InvalidFormat(
                f"{origin}:{lineno}: expected user:hash",
                hint="make entries with `htpasswd -B FILE USER`",
            )
        if user in entries:
            raise InvalidFormat(
                f"{origin}:{lineno}: user {user!r} appears twice",
                hint="keep one line per user",
            )
        if _BCRYPT_RE.fullmatch(hashed) is None:
            raise Unsupported(
                f"{origin}:{lineno}: user {user!r} has an unsupported hash, "
                f"{_kind(hashed)}: only bcrypt is accepted",
                hint="recreate the entry with `htpasswd -B FILE USER`",
            )
        entries[user] = hashed
    return entries


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """A ``$2y$`` bcrypt hash of ``password`` (the prefix Apache's ``htpasswd -B``
    writes; distribution and the bcrypt module read ``$2y$`` and ``$2b$`` alike)."""
    if not 4 <= cost <= 31:
        raise InvalidArgument(f"bcrypt cost {cost} is outside 4..31")
    key = password.encode("utf-8")
    if b"\0" in key:
        raise InvalidArgument("a password cannot hold a NUL byte")
    hashed = bcrypt.hashpw(key[:_BCRYPT_KEY_MAX], bcrypt.gensalt(cost))
    return "$2y$" + hashed.decode("ascii")[4:]


def _check_user(user: str) -> None:
    if (
        not user
        or user != user.strip()
        or any(c in user for c in ":\n\r")
        or user.startswith("#")
        or len(user.encode("utf-8")) > _USER_MAX
    ):
        raise InvalidArgument(
            f"user name {user[:80]!r} cannot go in an htpasswd file",
            hint="no ':', no line breaks, no surrounding blanks, not starting with '#'",
        )


def _write(path: str, data: bytes) -> None:
    try:
        write_atomic(path, data, 0o600)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path}: {exc.strerror}") from exc


def write_htpasswd(path: str, users: Mapping[str, str], cost: int = DEFAULT_COST) -> None:
    """Write ``path`` (mode 0600, crash-safe replace) with one bcrypt line per
    ``{user: password}``."""
    lines = []
    for user, password in users.items():
        _check_user(user)
        lines.append(f"{user}:{hash_password(password, cost)}\n")
    _write(path, "".join(lines).encode("utf-8"))


def set_password(path: str, user: str, password: str | None, cost: int = DEFAULT_COST) -> bool:
    """Add or change ``user``'s password in ``path`` (created if missing), or remove the
    user when ``password`` is None, as ``htpasswd -B`` / ``htpasswd -D`` do; other
    lines stay as they are. Returns whether the user was there before."""
    _check_user(user)
    try:
        with open(path, "rb") as f:
            data = f.read(_FILE_MAX + 1)
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from exc
    parse_htpasswd(data, path)  # refuse to edit a file that would not load
    name = user.encode("utf-8")
    kept = [ln for ln in data.splitlines() if ln.strip().partition(b":")[0] != name]
    found = len(kept) != len(data.splitlines())
    if password is not None:
        kept.append(name + b":" + hash_password(password, cost).encode("ascii"))
    _write(path, b"".join(ln + b"\n" for ln in kept))
    return found


@dataclass(frozen=True, slots=True)
class _Loaded:
    stamp: tuple[int, int, int, int] | None  # (dev, ino, size, mtime_ns) of the file read
    entries: dict[str, bytes]
    dummy: bytes  # checked for unknown users, at the file's highest cost
    error: str | None = None  # set when a reload failed: nobody authenticates


class Htpasswd:
    """A bcrypt htpasswd file, reloaded when it changes (checked by ``stat`` on every
    :meth:`verify`). Thread safe.

    A reload that fails (the file vanished, a line is malformed, a hash is not
    bcrypt) fails closed: every check is refused until the file is fixed, and the
    reason is logged. The first load raises instead, so a server does not start on a
    broken file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dummies: dict[int, bytes] = {}
        self._secret = os.urandom(32)
        self._verified: dict[bytes, tuple[_Loaded, float]] = {}
        stamp, data = self._read()
        self._state = self._parse(stamp, data)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._current().entries)

    @property
    def error(self) -> str | None:
        """Why the last reload failed, or None."""
        return self._current().error

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s. Unknown users cost one bcrypt check
        against a dummy hash, so timing does not tell which users exist. A success is
        remembered for :data:`VERIFIED_TTL` seconds (or until the file changes)."""
        state = self._current()
        key = password.encode("utf-8", "surrogatepass")[:_BCRYPT_KEY_MAX]
        tag = hmac.new(self._secret, user.encode("utf-8", "surrogatepass") + b"\0" + key, "sha256")
        digest = tag.digest()
        now = time.monotonic()
        seen = self._verified.get(digest)
        if seen is not None and seen[0] is state and seen[1] > now:
            return True
        hashed = state.entries.get(user)
        try:
            ok = bcrypt.checkpw(key, hashed if hashed is not None else state.dummy)
        except ValueError:  # a NUL in the password; bcrypt cannot take it
            ok = False
        ok = ok and hashed is not None and state.error is None
        if ok:
            with self._lock:
                if len(self._verified) >= _VERIFIED_MAX:
                    self._verified.clear()
                self._verified[digest] = (state, now + VERIFIED_TTL)
        return ok

    def _current(self) -> _Loaded:
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int, int] | None = (
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
            )
        except OSError:
            stamp = None
        state = self._state
        if stamp == state.stamp:
            return state
        with self._lock:
            if self._state.stamp != stamp:
                self._state = self._reload(stamp)
            return self._state

    def _reload(self, seen: tuple[int, int, int, int] | None) -> _Loaded:
        try:
            stamp, data = self._read()
            return self._parse(stamp, data)
        except (NotFound, InvalidFormat, Unsupported) as exc:
            _log.error("%s; refusing every login until it is fixed", exc)
            # Remember the broken version's stamp so it is not parsed again per request.
            return _Loaded(seen, {}, self._state.dummy, error=str(exc))

    def _read(self) -> tuple[tuple[int, int, int, int], bytes]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(_FILE_MAX + 1)
        except FileNotFoundError as exc:
            raise NotFound(
                f"htpasswd file {self.path} not found",
                hint="create it with `htpasswd -B -c FILE USER`",
            ) from exc
        except OSError as exc:
            raise InvalidFormat(f"cannot read htpasswd file {self.path}: {exc.strerror}") from exc
        if len(data) > _FILE_MAX:
            raise InvalidFormat(f"htpasswd file {self.path} is larger than {_FILE_MAX} bytes")
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), data

    def _parse(self, stamp: tuple[int, int, int, int], data: bytes) -> _Loaded:
        entries = parse_htpasswd(data, self.path)
        cost = max((_cost(h) for h in entries.values()), default=DEFAULT_COST)
        return _Loaded(stamp, entries, self._dummy(cost))

    def _dummy(self, cost: int) -> bytes:
        dummy = self._dummies.get(cost)
        if dummy is None:
            dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
            self._dummies[cost] = dummy
        return dummy
