"""The blob upload state machine (distribution-spec "Pushing blobs": end-4..end-6,
end-13, end-14), pure: the server keeps an :class:`UploadSession` per upload id, asks
these functions what a request may do, and stores what they return.

A server drives it so: POST -> :func:`new_session` (202, :func:`upload_headers`);
PATCH -> :func:`apply_patch` (416 if out of order), write the body, :func:`advance`;
PUT ?digest= -> the same for a body if any, then :func:`finish` with the digest it
computed while writing; GET -> 204 with :func:`upload_headers`; expiry sweeps
sessions for which :func:`is_stale` holds. A monolithic POST ?digest= is checked by
:func:`verify_blob`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lamina.oci.digest import Digest
from lamina.registry.errors import RegistryError

# OCI-Chunk-Min-Length (distribution-spec main, "Pushing a blob in chunks"): the smallest
# non-final chunk this registry wants; 0 would mean any size.
CHUNK_MIN_LENGTH = 0
# PATCH Content-Range is "<start>-<end>", inclusive, without the "bytes " unit.
_CHUNK_RANGE_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")


@dataclass(frozen=True, slots=True)
class UploadSession:
    """An open upload: ``offset`` bytes received so far, hashed with ``algorithm``."""

    uuid: str
    name: str
    offset: int = 0
    started: float = 0.0
    algorithm: str = "sha256"
    updated: float | None = None  # last accepted chunk; None = only started


def new_session(name: str, uuid: str, now: float, algorithm: str = "sha256") -> UploadSession:
    """A fresh session for a POST (end-4a) with the ``?digest-algorithm=`` it asked for."""
    return UploadSession(uuid, name, 0, now, algorithm)


def upload_headers(session: UploadSession, min_length: int = CHUNK_MIN_LENGTH) -> dict[str, str]:
    """Headers of a 202 (POST, PATCH) or 204 (status GET) upload answer."""
    out = {
        "Location": location(session.name, session.uuid),
        "Range": range_header(session),
        "Docker-Upload-UUID": session.uuid,
    }
    if min_length > 0:
        out["OCI-Chunk-Min-Length"] = str(min_length)
    return out


def verify_blob(
    expected: Digest, computed: Digest, size: int, content_length: int | None = None
) -> Digest:
    """Decide whether a monolithic upload (POST ?digest=, end-4b) commits: SIZE_INVALID
    when the body was not Content-Length long, DIGEST_INVALID when it hashes otherwise."""
    check_received(size, content_length)
    return _same_digest(expected, computed)


def check_received(size: int, content_length: int | None) -> None:
    """SIZE_INVALID unless a body of ``size`` bytes is the ``Content-Length`` it declared
    (None: nothing declared, nothing to check)."""
    if content_length is not None and size != content_length:
        raise RegistryError(
            "SIZE_INVALID",
            f"received {size} bytes, Content-Length said {content_length}",
            detail={"size": size, "content_length": content_length},
        )


def _same_digest(expected: Digest, computed: Digest) -> Digest:
    # distribution-spec "Pushing blobs": content that does not hash to ?digest= is refused.
    if computed != expected:
        raise RegistryError(
            "DIGEST_INVALID",
            f"content has digest {computed}, not {expected}",
            detail={"digest": str(expected), "computed": str(computed)},
        )
    return computed


def location(name: str, uuid: str) -> str:
    """The ``Location`` of an upload session (clients follow it verbatim)."""
    return f"/v2/{name}/blobs/uploads/{uuid}"


def range_header(session: UploadSession) -> str:
    """The ``Range`` header of a 202/204 upload answer: bytes ``0-<offset-1>`` held.

    With nothing received yet this is ``0-0``, as distribution sends it (the spec has
    no form for an empty range); clients read the offset from the end value + 1 only
    when it is non-zero, so they resume from 0 either way.
    """
    return f"0-{max(session.offset - 1, 0)}"


def chunk_min_length_header(min_length: int = CHUNK_MIN_LENGTH) -> str:
    return str(min_length)


def _out_of_order(session: UploadSession, detail: str) -> RegistryError:
    # distribution-spec "Pushing a blob in chunks": an out-of-order chunk MUST be
    # answered with 416 and the Range the registry holds.
    return RegistryError(
        "RANGE_NOT_SATISFIABLE",
        f"chunk out of order: {detail}",
        headers={
            "Range": range_header(session),
            "Location": location(session.name, session.uuid),
        },
    )


def apply_patch(
    session: UploadSession, content_range: str | None, content_length: int | None
) -> int | None:
    """Check a PATCH (or a final PUT with a body) against the session.

    Returns the offset the upload will reach when the chunk is stored, or None for a
    streamed chunk of unknown length (no Content-Range, no Content-Length: the server
    counts what it writes and calls :func:`advance`). Raises RegistryError 416 for a
    chunk that does not start at the current offset, SIZE_INVALID when Content-Length
    disagrees with Content-Range or is negative.
    """
    if content_length is not None and content_length < 0:
        raise RegistryError("SIZE_INVALID", f"negative Content-Length {content_length}")
    if content_range is None:
        if content_length is None:
            return None
        return session.offset + content_length
    m = _CHUNK_RANGE_RE.fullmatch(content_range.strip())
    if m is None:
        raise _out_of_order(session, f"malformed Content-Range {content_range[:60]!r}")
    start, end = int(m[1]), int(m[2])
    if end < start:
        raise _out_of_order(session, f"Content-Range {start}-{end} ends before it starts")
    if start != session.offset:
        raise _out_of_order(session, f"chunk starts at {start}, upload is at {session.offset}")
    length = end - start + 1
    if content_length is not None and content_length != length:
        raise RegistryError(
            "SIZE_INVALID",
            f"Content-Length {content_length} does not match Content-Range {start}-{end}",
            detail={"content_length": content_length, "content_range": f"{start}-{end}"},
        )
    return end + 1


def advance(session: UploadSession, written: int, now: float) -> UploadSession:
    """The session after ``written`` more bytes were stored."""
    if written < 0:
        raise RegistryError("SIZE_INVALID", f"negative chunk size {written}")
    return replace(session, offset=session.offset + written, updated=now)


def is_stale(session: UploadSession, now: float, ttl: float) -> bool:
    """True when nothing happened to the upload for longer than ``ttl`` seconds."""
    last = session.started if session.updated is None else max(session.started, session.updated)
    return now - last > ttl


def finish(
    session: UploadSession, digest_param: Digest, computed_digest: Digest, size: int
) -> Digest:
    """Decide whether a closing PUT (end-6) commits: the content the server hashed
    (``computed_digest``, ``size`` bytes in all) must be what ``?digest=`` names.

    Raises DIGEST_INVALID for a mismatch or an algorithm other than the session's
    (the bytes were hashed with that one only), SIZE_INVALID when ``size`` is not the
    session offset (bytes lost or counted twice).
    """
    if digest_param.algorithm != session.algorithm:
        raise RegistryError(
            "DIGEST_INVALID",
            f"upload was hashed with {session.algorithm}, digest says {digest_param.algorithm}",
            detail={"digest": str(digest_param)},
            hint="start the upload with ?digest-algorithm= matching the final digest",
        )
    if size != session.offset:
        raise RegistryError(
            "SIZE_INVALID",
            f"upload holds {session.offset} bytes, {size} were hashed",
            detail={"offset": session.offset, "size": size},
        )
    return _same_digest(digest_param, computed_digest)
