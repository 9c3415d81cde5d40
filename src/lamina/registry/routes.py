"""Route matching for the OCI Distribution Spec v1.1 API (spec "Endpoints", end-1..end-14).

:func:`match` turns a method, a decoded path and a raw query string into a
:class:`Route` or raises :class:`~lamina.registry.errors.RegistryError`. Every name,
tag, digest and upload id in a Route has been validated, so none of them can escape a
storage root when a driver turns it into a path or key. The name and tag grammar is
:mod:`lamina.oci.reference`'s (its one home); this module only applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from lamina.errors import InvalidArgument
from lamina.oci.digest import ALGORITHMS, Digest
from lamina.oci.reference import is_valid_repository, is_valid_tag
from lamina.registry.errors import RegistryError

# Spec endpoint ids (distribution-spec "Endpoints" table); catalog is not in the table.
BASE = "end-1"
BLOB = "end-2"  # GET/HEAD blob
MANIFEST = "end-3"  # GET/HEAD manifest
UPLOAD_START = "end-4a"  # POST uploads/
UPLOAD_MONOLITHIC = "end-4b"  # POST uploads/?digest=
UPLOAD_PATCH = "end-5"
UPLOAD_FINISH = "end-6"  # PUT <location>?digest=
MANIFEST_PUT = "end-7"
TAGS = "end-8"  # end-8a/end-8b: n and last are optional
MANIFEST_DELETE = "end-9"
BLOB_DELETE = "end-10"
UPLOAD_MOUNT = "end-11"
REFERRERS = "end-12"  # end-12a/end-12b: artifactType is optional
UPLOAD_STATUS = "end-13"
UPLOAD_CANCEL = "end-14"
CATALOG = "catalog"

# Upload ids are minted by this registry; accept only what it mints (no dots, no slashes).
UUID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A page never holds more than this many tags/repositories, whatever ``n`` asks
# (distribution-spec v1.1: the registry MAY return fewer than n, with a Link header).
PAGE_MAX = 1000

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # <name> may hold slashes: the greedy ``.+`` makes the last marker segment win.
    ("manifests", re.compile(r"(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("uploads", re.compile(r"(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]*)")),
    ("blobs", re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)")),
    ("tags", re.compile(r"(?P<name>.+)/tags/list")),
    ("referrers", re.compile(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)")),
)

_METHODS: dict[str, frozenset[str]] = {
    "base": frozenset({"GET", "HEAD"}),
    "catalog": frozenset({"GET"}),
    "manifests": frozenset({"GET", "HEAD", "PUT", "DELETE"}),
    "uploads_root": frozenset({"POST"}),
    "uploads": frozenset({"GET", "PATCH", "PUT", "DELETE"}),
    "blobs": frozenset({"GET", "HEAD", "DELETE"}),
    "tags": frozenset({"GET"}),
    "referrers": frozenset({"GET"}),
}


@dataclass(frozen=True, slots=True)
class Route:
    """One matched request: which endpoint, and its validated parameters."""

    endpoint: str
    method: str
    name: str | None = None
    tag: str | None = None  # manifest reference when it is a tag
    digest: Digest | None = None  # manifest/blob/referrers digest, or upload ?digest=
    uuid: str | None = None
    mount: Digest | None = None
    mount_from: str | None = None
    algorithm: str = "sha256"  # ?digest-algorithm= of an upload start or a manifest PUT
    n: int | None = None
    last: str | None = None
    artifact_type: str | None = None
    tags: tuple[str, ...] = ()  # PUT manifest ?tag=a&tag=b (spec main), no repeats
    # A GET/HEAD/DELETE reference that is neither a digest nor a valid tag: it names
    # nothing, so the handler answers 404 MANIFEST_UNKNOWN (after auth, like any miss).
    # Never a path or key: ``tag`` stays None.
    unknown_tag: str | None = None
    algorithm_given: bool = False  # ?digest-algorithm= was sent (manifest PUT by tag)

    @property
    def reference(self) -> str | None:
        """The manifest reference as sent: the tag, else the digest."""
        if self.tag is not None:
            return self.tag
        if self.unknown_tag is not None:
            return self.unknown_tag
        return None if self.digest is None else str(self.digest)


def check_name(name: str) -> str:
    """``name`` if it is a valid ``<name>`` (:func:`~lamina.oci.reference.is_valid_repository`,
    the one grammar), else NAME_INVALID (400)."""
    if not is_valid_repository(name):
        raise RegistryError(
            "NAME_INVALID",
            f"invalid repository name {name[:300]!r}",
            detail={"name": name[:300]},
            hint="names are lowercase path components like library/busybox, at most 255 long",
        )
    return name


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid tag (:func:`~lamina.oci.reference.is_valid_tag`), else
    TAG_INVALID (400): what storage drivers raise before a tag becomes a path or key."""
    if not is_valid_tag(tag):
        raise RegistryError(
            "TAG_INVALID",
            f"invalid tag {tag[:200]!r}",
            hint="tags are [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
        )
    return tag


def parse_digest(text: str) -> Digest:
    """A digest from the wire, or DIGEST_INVALID (400)."""
    try:
        return Digest.parse(text)
    except InvalidArgument as exc:
        raise RegistryError(
            "DIGEST_INVALID",
            f"invalid digest {text[:200]!r}",
            detail={"digest": text[:200]},
            hint="use sha256:<64 hex> or sha512:<128 hex>, lowercase",
        ) from exc


def _invalid_tag(tag: str) -> RegistryError:
    return RegistryError(
        "MANIFEST_INVALID",
        f"invalid tag {tag[:200]!r}",
        detail={"tag": tag[:200]},
        hint="tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}",
    )


def _algorithm(q: dict[str, list[str]]) -> str | None:
    algorithm = _one(q, "digest-algorithm")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise RegistryError(
            "DIGEST_INVALID",
            f"unsupported digest algorithm {algorithm[:40]!r}",
            detail={"digest-algorithm": algorithm[:40]},
            hint="use sha256 or sha512",
        )
    return algorithm


def _query(query: str) -> dict[str, list[str]]:
    try:
        return parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except ValueError as exc:  # more than max_num_fields
        raise RegistryError("UNSUPPORTED", "too many query parameters", status=400) from exc


def _one(q: dict[str, list[str]], key: str) -> str | None:
    values = q.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise RegistryError("UNSUPPORTED", f"query parameter {key!r} given twice", status=400)
    return values[0]


def _pagination(q: dict[str, list[str]]) -> tuple[int | None, str | None]:
    raw_n = _one(q, "n")
    n: int | None = None
    if raw_n is not None:
        if not raw_n.isascii() or not raw_n.isdigit() or len(raw_n) > 9:
            raise RegistryError(
                "UNSUPPORTED",
                f"invalid page size n={raw_n[:20]!r}",
                status=400,
                hint="n is a non-negative integer",
            )
        n = int(raw_n)
    return n, _one(q, "last")


def _not_allowed(method: str, kind: str) -> RegistryError:
    allowed = ", ".join(sorted(_METHODS[kind]))
    return RegistryError(
        "UNSUPPORTED",
        f"method {method} is not allowed here",
        status=405,
        headers={"Allow": allowed},
    )


def match(method: str, path: str, query: str = "") -> Route:
    """Match a request. ``path`` is the decoded path, ``query`` the raw query string.

    Raises RegistryError: 404 UNSUPPORTED for an unknown path, 405 for a known path with
    the wrong method (with ``Allow``), NAME_INVALID, DIGEST_INVALID, MANIFEST_INVALID
    (bad tag in a PUT; other methods get a Route with ``unknown_tag``),
    BLOB_UPLOAD_UNKNOWN (malformed upload id).
    """
    method = method.upper()
    if path in ("/v2", "/v2/"):
        if method not in _METHODS["base"]:
            raise _not_allowed(method, "base")
        return Route(BASE, method)
    if not path.startswith("/v2/"):
        raise RegistryError("UNSUPPORTED", f"no such endpoint {path[:200]!r}", status=404)
    rest = path[4:]
    q = _query(query)
    if rest == "_catalog":
        if method not in _METHODS["catalog"]:
            raise _not_allowed(method, "catalog")
        n, last = _pagination(q)
        return Route(CATALOG, method, n=n, last=last)
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(rest)
        if m is None:
            continue
        name = check_name(m["name"])
        if kind == "manifests":
            return _manifests(method, name, m["ref"], q)
        if kind == "uploads":
            return _uploads(method, name, m["uuid"], q)
        if kind == "blobs":
            if m["digest"] == "uploads" and method == "POST":
                # Some clients drop the trailing slash of end-4; mean the same thing.
                return _uploads(method, name, "", q)
            if method not in _METHODS["blobs"]:
                raise _not_allowed(method, "blobs")
            endpoint = BLOB_DELETE if method == "DELETE" else BLOB
            return Route(endpoint, method, name, digest=parse_digest(m["digest"]))
        if kind == "tags":
            if method not in _METHODS["tags"]:
                raise _not_allowed(method, "tags")
            n, last = _pagination(q)
            return Route(TAGS, method, name, n=n, last=last)
        if method not in _METHODS["referrers"]:
            raise _not_allowed(method, "referrers")
        digest = parse_digest(m["digest"])
        return Route(
            REFERRERS, method, name, digest=digest, artifact_type=_one(q, "artifactType") or None
        )
    raise RegistryError("UNSUPPORTED", f"no such endpoint {path[:200]!r}", status=404)


def _manifests(method: str, name: str, ref: str, q: dict[str, list[str]]) -> Route:
    if method not in _METHODS["manifests"]:
        raise _not_allowed(method, "manifests")
    tag: str | None = None
    digest: Digest | None = None
    if ":" in ref:
        digest = parse_digest(ref)
    elif is_valid_tag(ref):
        tag = ref
    elif method != "PUT":
        # distribution-spec "Pulling manifests": a manifest the repository does not hold
        # is a 404; a reference outside the tag grammar can hold nothing (the v1.1
        # conformance suite asks for .INVALID_MANIFEST_NAME).
        endpoint = MANIFEST_DELETE if method == "DELETE" else MANIFEST
        return Route(endpoint, method, name, unknown_tag=ref[:200])
    else:
        raise _invalid_tag(ref)
    if method == "PUT":
        extra = tuple(dict.fromkeys(q.get("tag", ())))
        for t in extra:
            if not is_valid_tag(t):
                raise _invalid_tag(t)
        algorithm = _algorithm(q)
        return Route(
            MANIFEST_PUT,
            method,
            name,
            tag=tag,
            digest=digest,
            tags=extra,
            algorithm=algorithm or (digest.algorithm if digest is not None else "sha256"),
            algorithm_given=algorithm is not None,
        )
    endpoint = MANIFEST_DELETE if method == "DELETE" else MANIFEST
    return Route(endpoint, method, name, tag=tag, digest=digest)


def _uploads(method: str, name: str, uuid: str, q: dict[str, list[str]]) -> Route:
    if uuid == "":
        if method not in _METHODS["uploads_root"]:
            raise _not_allowed(method, "uploads_root")
        algorithm = _algorithm(q) or "sha256"
        mount = _one(q, "mount")
        if mount is not None:
            source = _one(q, "from")
            # end-11: ``from`` MAY be omitted (the registry may then look anywhere it may).
            mount_from = None if not source else check_name(source)
            return Route(
                UPLOAD_MOUNT,
                method,
                name,
                mount=parse_digest(mount),
                mount_from=mount_from,
                algorithm=algorithm,
            )
        digest = _one(q, "digest")
        if digest is not None:
            d = parse_digest(digest)
            return Route(UPLOAD_MONOLITHIC, method, name, digest=d, algorithm=d.algorithm)
        return Route(UPLOAD_START, method, name, algorithm=algorithm)
    if method not in _METHODS["uploads"]:
        raise _not_allowed(method, "uploads")
    if UUID_RE.fullmatch(uuid) is None:
        raise RegistryError(
            "BLOB_UPLOAD_UNKNOWN", f"no upload {uuid[:200]!r}", detail={"uuid": uuid[:200]}
        )
    if method == "PATCH":
        return Route(UPLOAD_PATCH, method, name, uuid=uuid)
    if method == "GET":
        return Route(UPLOAD_STATUS, method, name, uuid=uuid)
    if method == "DELETE":
        return Route(UPLOAD_CANCEL, method, name, uuid=uuid)
    raw = _one(q, "digest")
    if raw is None:
        raise RegistryError(
            "DIGEST_INVALID",
            "closing an upload needs ?digest=",
            hint="PUT <location>?digest=sha256:<hex>",
        )
    return Route(UPLOAD_FINISH, method, name, uuid=uuid, digest=parse_digest(raw))
