"""``ADD https://…``: a streamed download, verified before it is used.

Docker's rules (Dockerfile reference, ADD): the file is named after the URL (BuildKit:
the ``Content-Disposition`` filename if the server sends one, else the last segment of
the URL path, else ``index``), has mode 0600, takes its mtime from ``Last-Modified``,
and is not extracted (unless ``--unpack=true``). ``--checksum=sha256:…`` is checked as
the bytes stream; a mismatch deletes the temporary file and nothing is left behind.

Only ``http`` and ``https`` are fetched; the body is capped (``max_bytes``). The caller
then copies the file into the image with the usual COPY semantics
(:func:`lamina.builder.files.copy.copy_into` on the directory this returns a path in).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message

from lamina.errors import (
    DigestMismatch,
    InvalidArgument,
    LaminaError,
    LimitExceeded,
    NotFound,
)

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 64 << 30
_DIGEST = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]+)$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


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


def filename_for(url: str, headers: Message | None = None) -> str:
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
    """Download ``url`` into ``dest_dir``; return the file's path (mode 0600)."""
    if not is_url(url):
        raise InvalidArgument(f"ADD: {url!r} is not an http(s) URL")
    want = parse_checksum(checksum) if checksum else None
    algo = want[0] if want else "sha256"
    request = urllib.request.Request(url, headers={"User-Agent": "lamina"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # http(s) only: is_url
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise NotFound(f"ADD {url}: HTTP {exc.code}", hint="check the URL") from exc
        raise LaminaError(f"ADD {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LaminaError(
            f"ADD {url}: cannot download: {reason}", hint="check the URL and the network"
        ) from exc
    with response:
        name = filename_for(url, response.headers)  # the URL as written, not a redirect
        final = os.path.join(dest_dir, name)
        tmp = os.path.join(dest_dir, f".{name}.{os.urandom(6).hex()}.part")
        digest = hashlib.new(algo)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            try:
                total = 0
                while True:
                    try:
                        data = response.read(CHUNK)
                    except (OSError, ValueError) as exc:
                        raise LaminaError(f"ADD {url}: download failed: {exc}") from exc
                    if not data:
                        break
                    total += len(data)
                    if total > max_bytes:
                        raise LimitExceeded(f"ADD {url}: the download is over {max_bytes} bytes")
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
