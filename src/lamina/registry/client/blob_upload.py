"""Blob upload: cross-repository mount, then POST + chunked PATCH + PUT ?digest
(dist-spec "Pushing blobs": "Pushing a blob in chunks", "Mounting a blob from another
repository").

Each PATCH carries ``Content-Range: <start>-<end>`` and ``Content-Length`` and is read
from the store file at its offset, so a chunk can be sent again. When a PATCH fails
(dropped connection, 5xx, 416) the client asks the upload's status (GET on its
``Location``) and continues from the ``Range`` the registry reports; when the registry
has forgotten the upload (404: distribution 2.8 cancels a session whose stored size no
longer matches its signed state) the upload starts over, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

from lamina.errors import DigestMismatch, LaminaError, SizeMismatch, ToolError
from lamina.http import Backoff, network_errors
from lamina.image.api import MOUNTED, UPLOADED, TransferProgress
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digester
from lamina.oci.reference import Reference
from lamina.registry.challenges import PULL, PUSH, Scope
from lamina.registry.client.transport import Response, Transport
from lamina.store.api import Provider

DEFAULT_CHUNK_SIZE = 64 << 20
READ_SIZE = 1 << 20
MAX_RESTARTS = 3
_RESUMABLE_STATUSES = frozenset({416, 500, 502, 503, 504})


class _Lost(Exception):
    """The registry forgot the upload session: start a new one (internal signal)."""


def _location(resp: Response, base: str) -> str:
    value = resp.headers.get("Location")
    if not value:
        raise ToolError(
            f"the registry answered {resp.status} to an upload without a Location header",
            hint="the registry does not follow the distribution spec",
        )
    from yarl import URL  # with aiohttp, imported only when pushing

    return str(URL(base).join(URL(value)))


def _range_end(resp: Response) -> int | None:
    """The last byte the registry holds, from ``Range: 0-<end>`` (None: none yet)."""
    value = resp.headers.get("Range", "")
    value = value.removeprefix("bytes=")
    start, sep, end = value.partition("-")
    if sep and start == "0" and end.isdigit():
        return int(end)
    return None


class _Upload:
    """One blob's upload; reads the blob file with pread, hashing sequential reads so a
    blob damaged in the store is refused before the final PUT."""

    def __init__(
        self,
        *,
        transport: Transport,
        sessions_url: str,
        ref: Reference,
        desc: Descriptor,
        path: str,
        progress: TransferProgress,
        chunk_size: int,
    ) -> None:
        self.transport = transport
        self.sessions_url = sessions_url
        self.ref = ref
        self.desc = desc
        self.path = path
        self.progress = progress
        self.chunk_size = chunk_size
        self.scopes = (Scope(ref.repository, (PULL, PUSH)),)
        self.digester = Digester(desc.digest.algorithm)
        self.fd = -1

    def _read(self, offset: int, n: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise SizeMismatch(
                f"blob {self.desc.digest} in the store ends before {offset + n} bytes",
                hint="the stored copy is damaged: delete the blob, then pull or import it again",
            )
        if self.digester.size == offset:
            self.digester.update(data)
        return data

    def body(self, start: int, end: int) -> Callable[[], AsyncIterator[bytes]]:
        async def produce() -> AsyncIterator[bytes]:
            pos = start
            nxt = asyncio.ensure_future(
                asyncio.to_thread(self._read, pos, min(READ_SIZE, end - pos))
            )
            try:
                while pos < end:
                    data = await nxt
                    pos += len(data)
                    if pos < end:  # read the next megabyte while this one is sent
                        nxt = asyncio.ensure_future(
                            asyncio.to_thread(self._read, pos, min(READ_SIZE, end - pos))
                        )
                    self.progress.advance(self.desc, len(data))
                    yield data
            finally:
                if not nxt.done():
                    await asyncio.wait([nxt])

        return produce

    async def start(self, query: dict[str, str] | None = None) -> tuple[int, str, int]:
        """POST a session: (status, Location, minimum chunk length)."""
        from yarl import URL

        url = str(URL(self.sessions_url).with_query(query)) if query else self.sessions_url
        scopes: tuple[Scope, ...] = self.scopes
        if query and "from" in query:
            scopes = (*scopes, Scope(query["from"], (PULL,)))
        async with self.transport.request(
            "POST",
            url,
            registry=self.ref.registry,
            scopes=scopes,
            headers={"Content-Length": "0"},
            ok=(201, 202),
            what=f"upload of {self.desc.digest} to {self.ref.name}",
        ) as resp:
            if resp.status == 201:
                return 201, "", 0
            minimum = resp.headers.get("OCI-Chunk-Min-Length", "")
            return 202, _location(resp, url), int(minimum) if minimum.isdigit() else 0

    async def status(self, location: str) -> tuple[int, str]:
        """GET the session: (next offset, Location); _Lost if the registry forgot it."""
        try:
            async with self.transport.request(
                "GET",
                location,
                registry=self.ref.registry,
                scopes=self.scopes,
                ok=(204, 200, 404),
                what=f"upload status of {self.desc.digest}",
            ) as resp:
                if resp.status == 404:
                    raise _Lost
                end = _range_end(resp)
                new = _location(resp, location) if resp.headers.get("Location") else location
                # distribution 2.8 answers "0-0" for an empty session as well as for a
                # one-byte one; resuming at 0 is right for the first and, for the second,
                # draws a 416 whose retry costs one byte's worth of work.
                if end is None or end == 0:
                    return 0, new
                return end + 1, new
        except LaminaError as exc:
            raise _Lost from exc

    async def send(self, location: str, minimum: int) -> str:
        """PATCH every chunk from the start; returns the Location for the final PUT."""
        size = self.desc.size
        chunk = max(self.chunk_size, minimum)
        offset = 0
        backoff = Backoff(self.transport.attempts)
        while offset < size:
            end = min(offset + chunk, size)
            failed = False
            try:
                async with self.transport.request(
                    "PATCH",
                    location,
                    registry=self.ref.registry,
                    scopes=self.scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end - 1}",
                        "Content-Length": str(end - offset),
                    },
                    body=self.body(offset, end),
                    ok=(202, *_RESUMABLE_STATUSES, 404),
                    what=f"upload of {self.desc.digest}",
                    retry=False,
                ) as resp:
                    if resp.status == 404:
                        raise _Lost
                    if resp.status == 202:
                        location = _location(resp, location)
                        got = _range_end(resp)
                        offset = end if got is None else got + 1
                    else:
                        failed = True
            except network_errors():
                failed = True
            if failed:
                if not backoff.more():
                    raise _Lost
                await backoff.wait()
                # dist-spec "Resuming an upload" (status GET) before the next chunk.
                offset, location = await self.status(location)
                self.progress.restart(self.desc)
                self.progress.advance(self.desc, offset)
        return location

    async def finish(self, location: str) -> None:
        if self.digester.size == self.desc.size:
            got = self.digester.digest()
            if got != self.desc.digest:
                raise DigestMismatch(
                    f"blob {self.desc.digest} in the store has digest {got}",
                    hint="the stored copy is damaged: delete it, then pull or import it again",
                )
        from yarl import URL

        url = str(URL(location).update_query(digest=str(self.desc.digest)))
        async with self.transport.request(
            "PUT",
            url,
            registry=self.ref.registry,
            scopes=self.scopes,
            headers={"Content-Length": "0"},
            ok=(201, 204),
            what=f"upload of {self.desc.digest} to {self.ref.name}",
        ):
            return None


async def upload_blob(
    transport: Transport,
    sessions_url: str,
    ref: Reference,
    *,
    desc: Descriptor,
    provider: Provider,
    progress: TransferProgress,
    mount_from: tuple[str, ...] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> str:
    """Mount or upload one blob into ``ref``'s repository; MOUNTED or UPLOADED."""
    upload = _Upload(
        transport=transport,
        sessions_url=sessions_url,
        ref=ref,
        desc=desc,
        path=provider.blob_path(desc.digest),
        progress=progress,
        chunk_size=chunk_size,
    )
    location = ""
    minimum = 0
    for source in mount_from:
        if source == ref.repository:
            continue
        status, location, minimum = await upload.start({"mount": str(desc.digest), "from": source})
        if status == 201:
            return MOUNTED
        break  # the registry opened a normal session instead: use it
    upload.fd = os.open(upload.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if os.fstat(upload.fd).st_size != desc.size:
            raise SizeMismatch(
                f"blob {desc.digest} in the store is not {desc.size} bytes",
                hint="the stored copy is damaged: delete it, then pull or import it again",
            )
        for attempt in range(MAX_RESTARTS + 1):
            try:
                if not location:
                    _, location, minimum = await upload.start()
                final = await upload.send(location, minimum)
                await upload.finish(final)
                return UPLOADED
            except _Lost as exc:
                if attempt == MAX_RESTARTS:
                    raise ToolError(
                        f"the upload of {desc.digest} to {ref.name} failed {attempt + 1} times",
                        hint="check the registry's health and logs, then push again",
                    ) from exc
                location = ""
                progress.restart(desc)
        raise AssertionError("unreachable")
    finally:
        os.close(upload.fd)
