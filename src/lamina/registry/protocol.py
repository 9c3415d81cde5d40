"""The registry's protocol decisions, pure (no sockets, no files): tag and catalog
pages, manifest PUT checks, referrers answers. Route matching (``routes``), errors,
the upload state machine (``upload_state``), ranges and auth challenges
(``challenges``) live in sibling modules and are re-exported here, so the server
imports one module (in the style of h11: the I/O layer asks, this module decides).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from lamina.errors import InvalidArgument, Unsafe, Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.artifact import referrer_descriptor, referrers_index
from lamina.oci.canonical import MAX_DOCUMENT_BYTES
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import ALGORITHMS, Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.registry.challenges import (
    Challenge,
    Scope,
    allows,
    basic_authorization,
    basic_challenge,
    bearer_challenge,
    parse_authorization,
    parse_challenge,
    parse_challenges,
    parse_scopes,
    required_scope,
    required_scopes,
    unauthorized,
)
from lamina.registry.errors import CODES, RegistryError, error_body
from lamina.registry.ranges import content_range, parse_range, unsatisfiable
from lamina.registry.routes import PAGE_MAX, Route, check_name, match, parse_digest
from lamina.registry.upload_state import (
    CHUNK_MIN_LENGTH,
    UploadSession,
    advance,
    apply_patch,
    check_received,
    finish,
    is_stale,
    location,
    new_session,
    range_header,
    upload_headers,
    verify_blob,
)

__all__ = [
    "API_VERSION_HEADERS",
    "CHUNK_MIN_LENGTH",
    "CODES",
    "MANIFEST_MAX",
    "PAGE_MAX",
    "BlobAnswer",
    "Challenge",
    "ManifestPut",
    "RegistryError",
    "Route",
    "Scope",
    "UploadSession",
    "advance",
    "allows",
    "apply_patch",
    "basic_authorization",
    "basic_challenge",
    "bearer_challenge",
    "blob_answer",
    "catalog_body",
    "check_manifest_put",
    "check_name",
    "check_received",
    "content_range",
    "digest_pushed_under",
    "error_body",
    "finish",
    "is_stale",
    "location",
    "manifest_blob_unknown",
    "manifest_headers",
    "match",
    "missing_blobs",
    "new_session",
    "paginate",
    "parse_authorization",
    "parse_challenge",
    "parse_challenges",
    "parse_digest",
    "parse_range",
    "parse_scopes",
    "range_header",
    "referrers_response",
    "required_scope",
    "required_scopes",
    "tags_body",
    "unauthorized",
    "unsatisfiable",
    "upload_headers",
    "verify_blob",
]

# distribution-spec "Determining Support": clients check this header on /v2/.
API_VERSION_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
MANIFEST_MAX = MAX_DOCUMENT_BYTES  # distribution-spec: registries SHOULD accept 4 MiB
_NONDISTRIBUTABLE = frozenset(
    {
        mt.OCI_LAYER_NONDIST,
        mt.OCI_LAYER_NONDIST_GZIP,
        mt.OCI_LAYER_NONDIST_ZSTD,
        mt.DOCKER_LAYER_FOREIGN_GZIP,
    }
)


def paginate(
    items: Iterable[str], n: int | None, last: str | None, url: str
) -> tuple[list[str], str | None]:
    """One page of ``items`` in lexical order after ``last``, at most ``n`` long (and at
    most PAGE_MAX), plus the ``Link`` header value for the next page when more remain
    (distribution-spec "Listing Tags"). ``url`` is the path the link points at, e.g.
    ``/v2/<name>/tags/list``."""
    ordered = sorted(set(items))
    if last is not None:
        ordered = [t for t in ordered if t > last]
    limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
    page = ordered[:limit]
    if len(ordered) <= limit or not page:
        return page, None
    query = urlencode({"n": limit, "last": page[-1]})
    return page, f'<{url}?{query}>; rel="next"'


def tags_body(name: str, tags: Sequence[str]) -> bytes:
    return json.dumps({"name": name, "tags": list(tags)}, separators=(",", ":")).encode()


def catalog_body(repositories: Sequence[str]) -> bytes:
    return json.dumps({"repositories": list(repositories)}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ManifestPut:
    """An accepted manifest PUT: the parsed document, the digest of the exact bytes,
    the tag to point at it (None when pushed by digest) and the ``OCI-Subject``."""

    doc: Manifest | Index
    digest: Digest
    media_type: str
    tag: str | None
    subject: Digest | None

    @property
    def headers(self) -> dict[str, str]:
        out = {"Docker-Content-Digest": str(self.digest)}
        if self.subject is not None:
            out["OCI-Subject"] = str(self.subject)
        return out


def _bare_media_type(header: str | None) -> str | None:
    if header is None:
        return None
    bare = header.split(";", 1)[0].strip().lower()
    return bare or None


def check_manifest_put(
    media_type_header: str | None, body: bytes, reference: str, algorithm: str = "sha256"
) -> ManifestPut:
    """Validate a manifest PUT (end-7) before anything is stored.

    Refuses (RegistryError): bodies over 4 MiB (SIZE_INVALID, 413), a Content-Type
    that is not a manifest or index type, or disagrees with the body's ``mediaType``,
    or a body that does not parse (MANIFEST_INVALID); a PUT by digest whose bytes have
    another digest (DIGEST_INVALID). The digest is of the bytes as sent, never of a
    re-serialisation, so clients can verify it; a PUT by tag hashes with ``algorithm``
    (``?digest-algorithm=``, sha256 by default), a PUT by digest with the digest's own.
    """
    if len(body) > MANIFEST_MAX:
        raise RegistryError(
            "SIZE_INVALID",
            f"manifest is {len(body)} bytes, over the {MANIFEST_MAX} byte cap",
            status=413,
            detail={"size": len(body), "limit": MANIFEST_MAX},
        )
    tag: str | None = None
    by_digest: Digest | None = None
    if ":" in reference:
        by_digest = parse_digest(reference)
    else:
        tag = reference
    media_type = _bare_media_type(media_type_header)
    if media_type is not None and media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
        raise RegistryError(
            "MANIFEST_INVALID",
            f"unsupported manifest media type {media_type[:120]!r}",
            detail={"mediaType": media_type[:120]},
            hint="push OCI or Docker schema2 manifests and indexes",
        )
    try:
        doc = parse_document(body, media_type)
    except (InvalidArgument, Unsupported, Unsafe) as exc:
        # Unsupported: Docker schema 1; Unsafe: nesting or size caps of the JSON reader.
        raise RegistryError(
            "MANIFEST_INVALID", f"manifest invalid: {exc.message}", detail={"reason": exc.message}
        ) from exc
    if by_digest is not None:
        algorithm = by_digest.algorithm
    digest = Digest.from_bytes(body, algorithm)
    if by_digest is not None and digest != by_digest:
        raise RegistryError(
            "DIGEST_INVALID",
            f"manifest bytes have digest {digest}, not {by_digest}",
            detail={"digest": str(by_digest), "computed": str(digest)},
        )
    subject = doc.subject.digest if doc.subject is not None else None
    return ManifestPut(doc, digest, doc.media_type, tag, subject)


def digest_pushed_under(
    put: ManifestPut, body: bytes, held: Callable[[Digest], bool]
) -> ManifestPut:
    """The digest a PUT by tag (without ``?digest-algorithm=``) names.

    Content pushed by a sha512 digest and then tagged by a plain PUT of the same bytes
    must keep answering the digest it was pushed under (conformance ``tag-param-sha512``;
    distribution-spec "Content Digests": the registry answers the digest of the content
    it holds). So when the repository ``held`` these bytes under another algorithm's
    digest and not under the canonical one, the tag points there; otherwise ``put`` is
    returned unchanged.
    """
    if put.tag is None or held(put.digest):
        return put
    for algorithm in ALGORITHMS:
        if algorithm == put.digest.algorithm:
            continue
        other = Digest.from_bytes(body, algorithm)
        if held(other):
            return replace(put, digest=other)
    return put


def missing_blobs(doc: Manifest | Index, known: Callable[[Digest], bool]) -> list[Digest]:
    """The digests ``doc`` needs that ``known`` says the repository lacks, in document
    order without repeats. The caller answers MANIFEST_BLOB_UNKNOWN when non-empty.

    The ``subject`` is not checked: distribution-spec "Pushing Manifests with Subject"
    says the registry MUST accept a subject it does not have. Non-distributable
    (foreign) layers with ``urls`` live elsewhere and are not required either.
    """
    wanted = [doc.config, *doc.layers] if isinstance(doc, Manifest) else list(doc.manifests)
    out: list[Digest] = []
    seen: set[Digest] = set()
    for d in wanted:
        if d.digest in seen:
            continue
        seen.add(d.digest)
        if d.urls and d.media_type in _NONDISTRIBUTABLE:
            continue
        if not known(d.digest):
            out.append(d.digest)
    return out


def manifest_blob_unknown(missing: Sequence[Digest]) -> RegistryError:
    return RegistryError(
        "MANIFEST_BLOB_UNKNOWN",
        f"manifest references {len(missing)} blob(s) the repository lacks, first {missing[0]}",
        detail={"digests": [str(d) for d in missing[:16]]},
        hint="push the blobs before the manifest",
    )


def referrers_response(
    subject: Digest,
    manifests: Iterable[tuple[Descriptor, Manifest | Index]],
    artifact_type: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a referrers answer (end-12): an image index of the
    repository's manifests whose ``subject`` is ``subject``, each entry carrying the
    referrer's artifactType and annotations, filtered by ``artifact_type`` when given
    (then ``OCI-Filters-Applied: artifactType``). Never an error when none match."""
    entries = [
        referrer_descriptor(desc, doc)
        for desc, doc in manifests
        if doc.subject is not None and doc.subject.digest == subject
    ]
    entries.sort(key=lambda d: d.digest)
    index = referrers_index(entries, artifact_type)
    headers = {"Content-Type": mt.OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    return index.to_bytes(), headers


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    """How to answer a blob GET/HEAD (end-2): status 200 or 206, headers, and the
    inclusive byte span to send (``start``, ``end``; ``end`` is -1 for an empty blob)."""

    status: int
    headers: dict[str, str]
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def blob_answer(digest: Digest, size: int, range_header_value: str | None) -> BlobAnswer:
    """The status, headers and span of a blob read; raises RegistryError 416 (with
    ``Content-Range: bytes */size``) for an unsatisfiable Range."""
    headers = {
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    span = parse_range(range_header_value, size)
    if span is None:
        headers["Content-Length"] = str(size)
        return BlobAnswer(200, headers, 0, size - 1)
    start, end = span
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = content_range(start, end, size)
    return BlobAnswer(206, headers, start, end)


def manifest_headers(digest: Digest, media_type: str, size: int) -> dict[str, str]:
    """Headers of a manifest GET/HEAD (end-3): Content-Type is the stored media type."""
    return {
        "Content-Type": media_type,
        "Docker-Content-Digest": str(digest),
        "Content-Length": str(size),
    }
