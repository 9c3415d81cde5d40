"""``ADD https://…``: a streamed download, verified before it is used.

Docker's rules (Dockerfile reference, ADD): the file is named after the URL (BuildKit:
the ``Content-Disposition`` filename if the server sends one, else the last segment of
the URL path, else ``index``), has mode 0600, takes its mtime from ``Last-Modified``,
and is not extracted (unless ``--unpack=true``). ``--checksum=sha256:…`` is checked as
the bytes stream; a mismatch deletes the temporary file and nothing is left behind.

Only ``http`` and ``https`` are fetched, through the same HTTP stack as the registry
client (:mod:`lamina.http`: aiohttp, the verified TLS context, backoff): redirects are
followed (up to ``lamina.http.MAX_REDIRECTS``, 10; one more is a clear error), bytes
are kept as sent (no Content-Encoding is asked for or decoded), a dropped connection
or a 429/5xx answer is tried again from the start (a few times, with backoff), and
the body is capped (``max_bytes``). The caller then copies the file into the image
with the usual COPY semantics
(:func:`lamina.builder.files.copy.copy_into` on the directory this returns a path in).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from email.message import Message
from typing import TYPE_CHECKING

from lamina.errors import (
    DigestMismatch,
    InvalidArgument,
    LaminaError,
    LimitExceeded,
    NotFound,
)
from lamina.http import (
    MAX_REDIRECTS,
    RETRY_STATUSES,
    Backoff,
    is_certificate_error,
    is_dns_error,
    network_errors,
    new_session,
    too_many_redirects,
)

if TYPE_CHECKING:
    import aiohttp

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 64 << 30
_DIGEST = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_ATTEMPTS = 3  # tries after the first: a flaky mirror, not an outage, is what they cover


def is_url(source: str) -> bool:
    """Whether an ADD source is a URL to download (http or https)."""
    lowered = source.lower()
    return lowered.startswith(("http://", "https://"))


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``sha256:hex`` -> (algorithm, hex); InvalidArgument otherwise."""
    m = _DIGEST.match(checksum.strip().lower())
    if m is None or len(m.group(2)) != _HEX_LEN[m.group(1)]:
        raise InvalidArgument(
            f"invalid --checksum {checksum!r}",
            hint="use --checksum=sha256:<64 hex digits>",
        )
    return m.group(1), m.group(2)


def filename_for(url: str, headers: Mapping[str, str] | None = None) -> str:
    """The name a downloaded file gets (see the module docstring); never a path."""
    if headers is not None:
        disposition = headers.get("Content-Disposition")
        if disposition:
            msg = Message()
            msg["Content-Disposition"] = disposition
            name = msg.get_filename()
            if name:
                base = posixpath.basename(name.replace("\\", "/"))
                if base not in ("", ".", "..") and "\0" not in base:
                    return base
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    base = posixpath.basename(path)
    if base in ("", ".", "..") or "\0" in base:
        return "index"
    return base


def fetch_url(
    url: str,
    dest_dir: str,
    *,
    checksum: str | None = None,
    timeout: float = 60,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Download ``url`` into ``dest_dir``; return the file's path (mode 0600).
    ``timeout`` bounds the connect and each read, not the whole download."""
    if not is_url(url):
        raise InvalidArgument(f"ADD: {url!r} is not an http(s) URL")
    want = parse_checksum(checksum) if checksum else None
    # the builder is synchronous: one event loop per download
    return asyncio.run(_download(url, dest_dir, want, timeout, max_bytes))


class _BodyBroke(Exception):
    """The connection failed while the body streamed (retried like a failed connect)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _download(
    url: str, dest_dir: str, want: tuple[str, str] | None, timeout: float, max_bytes: int
) -> str:
    from lamina.http.tls import aiohttp, verified_context

    # passed for every request: a redirect from http to https is verified too
    context = verified_context()
    backoff = Backoff(_ATTEMPTS)
    async with new_session(connections=1, connect_timeout=timeout, read_timeout=timeout) as session:
        while True:
            retry_after = None
            try:
                # aiohttp raises at its max_redirects-th redirect: + 1 follows ten
                async with session.get(
                    url, ssl=context, max_redirects=MAX_REDIRECTS + 1
                ) as response:
                    if response.status in RETRY_STATUSES and backoff.more():
                        retry_after = response.headers.get("Retry-After")
                    else:
                        _check_status(url, response)
                        return await _save(url, response, dest_dir, want, max_bytes)
            except _BodyBroke as broke:
                if not backoff.more():
                    raise LaminaError(f"ADD {url}: download failed: {broke}") from broke.cause
            except network_errors() as exc:
                # the same name fails to resolve, the same certificate comes back
                if is_certificate_error(exc) or is_dns_error(exc) or not backoff.more():
                    raise _cannot_download(url, exc) from exc
            except aiohttp.TooManyRedirects as exc:  # a loop: the same loop next time
                raise too_many_redirects("ADD", url, "cannot download: ") from exc
            except aiohttp.ClientError as exc:  # a redirect elsewhere than http(s), a bad URL
                raise _cannot_download(url, exc) from exc
            await backoff.wait(retry_after)


def _check_status(url: str, response: aiohttp.ClientResponse) -> None:
    status = response.status
    if status in (404, 410):
        raise NotFound(f"ADD {url}: HTTP {status}", hint="check the URL")
    if not 200 <= status < 300:
        raise LaminaError(f"ADD {url}: HTTP {status} {response.reason or ''}".rstrip())


def _cannot_download(url: str, exc: BaseException) -> LaminaError:
    reason = str(exc) or type(exc).__name__
    return LaminaError(
        f"ADD {url}: cannot download: {reason}", hint="check the URL and the network"
    )


async def _save(
    url: str,
    response: aiohttp.ClientResponse,
    dest_dir: str,
    want: tuple[str, str] | None,
    max_bytes: int,
) -> str:
    if response.content_length is not None and response.content_length > max_bytes:
        raise LimitExceeded(f"ADD {url}: the download is over {max_bytes} bytes")
    name = filename_for(url, response.headers)  # the URL as written, not a redirect
    final = os.path.join(dest_dir, name)
    tmp = os.path.join(dest_dir, f".{name}.{os.urandom(6).hex()}.part")
    algo = want[0] if want else "sha256"
    digest = hashlib.new(algo)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            total = 0
            while True:
                try:
                    data = await response.content.read(CHUNK)
                except network_errors() as exc:
                    raise _BodyBroke(exc) from exc
                if not data:
                    break
                total += len(data)
                if total > max_bytes:
                    raise LimitExceeded(f"ADD {url}: the download is over {max_bytes} bytes")
                # hashed and written on the loop: it serves this one download only
                digest.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o600)
            modified = response.headers.get("Last-Modified")
            if modified:
                with contextlib.suppress(TypeError, ValueError):
                    when = email.utils.parsedate_to_datetime(modified).timestamp()
                    os.utime(fd, (when, when))
        finally:
            os.close(fd)
        if want is not None and digest.hexdigest() != want[1]:
            raise DigestMismatch(
                f"ADD {url}: checksum mismatch: want {want[0]}:{want[1]}, "
                f"got {algo}:{digest.hexdigest()}",
                hint="the file changed on the server, or --checksum is wrong",
            )
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return final


def url_checksum(path: str, checksum: str | None = None) -> str:
    """The cache identity of a downloaded file: ``--checksum`` when given (it was
    verified by :func:`fetch_url`), else the sha256 of the content."""
    if checksum:
        algo, hexd = parse_checksum(checksum)
        return f"{algo}:{hexd}"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK):
            h.update(data)
    return "sha256:" + h.hexdigest()
