"""Manifests, tags, referrers and the catalog (distribution-spec end-3, end-7, end-8,
end-9, end-12, and the catalog extension). ``protocol`` checks and shapes every answer;
these handlers fetch from and store into the driver."""

from __future__ import annotations

from aiohttp import web

from lamina.errors import InvalidArgument, NotFound, Unsafe, Unsupported
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.registry import protocol as p
from lamina.registry.server.context import BASE_HEADERS, BYTES_IN, BYTES_OUT, JSON, Context
from lamina.registry.storage.api import RegistryStorage

# Parsed documents kept for referrers queries; dropped wholesale past this many.
SUBJECTS_MAX = 20_000


def _manifest_unknown(name: str, reference: str) -> p.RegistryError:
    return p.RegistryError(
        "MANIFEST_UNKNOWN",
        f"manifest {reference} unknown to repository {name}",
        detail={"name": name, "reference": reference},
    )


async def base(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    return web.Response(status=200, body=b"{}", headers={**BASE_HEADERS, "Content-Type": JSON})


def _lookup(storage: RegistryStorage, name: str, route: p.Route) -> tuple[Digest, str, bytes]:
    digest = storage.resolve_tag(name, route.tag) if route.tag is not None else route.digest
    assert digest is not None
    media_type, data = storage.get_manifest(name, digest)
    return digest, media_type, data


async def manifest_get(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None
    if route.unknown_tag is not None:
        raise _manifest_unknown(route.name, route.unknown_tag)
    try:
        digest, media_type, data = await ctx.quick(_lookup, ctx.storage, route.name, route)
    except NotFound as exc:
        raise _manifest_unknown(route.name, route.reference or "") from exc
    headers = {**BASE_HEADERS, **p.manifest_headers(digest, media_type, len(data))}
    if route.method == "HEAD":
        head = web.StreamResponse(status=200, headers=headers)
        head.content_length = len(data)
        return head
    request[BYTES_OUT] = len(data)
    return web.Response(status=200, body=data, headers=headers)


async def _read_capped(request: web.Request, cap: int) -> bytes:
    """The request body, refusing (413) one longer than ``cap`` before reading it all."""
    declared = request.content_length
    if declared is not None and declared > cap:
        raise _too_big(declared, cap)
    parts: list[bytes] = []
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if total > cap:
            raise _too_big(total, cap)
        parts.append(chunk)
    request[BYTES_IN] = total
    return b"".join(parts)


def _too_big(size: int, cap: int) -> p.RegistryError:
    # distribution-spec "Pushing Manifests": a registry MAY refuse large manifests with
    # 413; the 4 MiB cap is the minimum it SHOULD accept (ARCHITECTURE.md section 5).
    return p.RegistryError(
        "SIZE_INVALID",
        f"manifest of {size} bytes is over the {cap} byte cap",
        status=413,
        detail={"size": size, "limit": cap},
    )


def _store_manifest(
    storage: RegistryStorage, name: str, put: p.ManifestPut, data: bytes, pick: bool
) -> p.ManifestPut:
    """Store the manifest; returns ``put`` with the digest it is stored and tagged under
    (``pick``: a PUT by tag may reuse the digest the bytes were pushed under)."""
    if pick:
        put = p.digest_pushed_under(put, data, lambda d: storage.has_manifest(name, d))
    if isinstance(put.doc, Index):

        def known(d: Digest) -> bool:
            return storage.has_manifest(name, d) or storage.has_link(name, d)
    else:

        def known(d: Digest) -> bool:
            return storage.has_link(name, d)

    missing = p.missing_blobs(put.doc, known)
    if missing:
        raise p.manifest_blob_unknown(missing)
    storage.put_manifest(name, put.digest, put.media_type, data)
    return put


def _tag_all(storage: RegistryStorage, name: str, digest: Digest, tags: list[str]) -> None:
    for tag in tags:
        storage.tag(name, tag, digest)


async def manifest_put(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.reference is not None
    data = await _read_capped(request, p.MANIFEST_MAX)
    put = p.check_manifest_put(
        request.headers.get("Content-Type"), data, route.reference, route.algorithm
    )
    pick = put.tag is not None and not route.algorithm_given
    put = await ctx.call(_store_manifest, ctx.storage, route.name, put, data, pick)
    tags = list(dict.fromkeys(([put.tag] if put.tag is not None else []) + list(route.tags)))
    if tags:
        await ctx.call(_tag_all, ctx.storage, route.name, put.digest, tags)
    headers = {
        **BASE_HEADERS,
        **put.headers,
        "Location": f"/v2/{route.name}/manifests/{put.digest}",
        "Content-Length": "0",
    }
    resp = web.Response(status=201, headers=headers)
    # distribution-spec (main) "Pushing Manifests with Tags": one OCI-Tag per tag the
    # registry applied, so a client knows the ?tag= parameters were understood.
    for tag in tags:
        resp.headers.add("OCI-Tag", tag)
    return resp


async def manifest_delete(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None
    if route.unknown_tag is not None:
        raise _manifest_unknown(route.name, route.unknown_tag)
    try:
        if route.tag is not None:
            # distribution-spec v1.1 "Deleting tags": DELETE by tag removes only the tag.
            await ctx.call(ctx.storage.untag, route.name, route.tag)
        else:
            assert route.digest is not None
            await ctx.call(ctx.storage.delete_manifest, route.name, route.digest)
    except NotFound as exc:
        raise _manifest_unknown(route.name, route.reference or "") from exc
    return web.Response(status=202, headers={**BASE_HEADERS, "Content-Length": "0"})


async def tags_list(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None
    try:
        tags = await ctx.quick(ctx.storage.list_tags, route.name)
    except NotFound as exc:
        raise p.RegistryError(
            "NAME_UNKNOWN", f"repository {route.name} not known", detail={"name": route.name}
        ) from exc
    page, link = p.paginate(tags, route.n, route.last, f"/v2/{route.name}/tags/list")
    headers = {**BASE_HEADERS, "Content-Type": JSON}
    if link is not None:
        headers["Link"] = link
    return web.Response(status=200, body=p.tags_body(route.name, page), headers=headers)


async def catalog(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    names = await ctx.call(ctx.storage.list_repositories)
    page, link = p.paginate(names, route.n, route.last, "/v2/_catalog")
    headers = {**BASE_HEADERS, "Content-Type": JSON}
    if link is not None:
        headers["Link"] = link
    return web.Response(status=200, body=p.catalog_body(page), headers=headers)


def _candidates(
    ctx: Context, name: str, subject: Digest
) -> list[tuple[Descriptor, Manifest | Index]]:
    """The manifests of ``name`` whose subject is ``subject`` (parsed once per digest)."""
    storage = ctx.storage
    if len(ctx.subjects) > SUBJECTS_MAX:
        ctx.subjects.clear()
    out: list[tuple[Descriptor, Manifest | Index]] = []
    for digest in storage.iter_manifests(name):
        key = str(digest)
        if key not in ctx.subjects:
            try:
                media_type, data = storage.get_manifest(name, digest)
                doc = parse_document(data, media_type)
            except (NotFound, InvalidArgument, Unsupported, Unsafe):
                continue  # deleted meanwhile, or a document this reader refuses
            ctx.subjects[key] = (media_type, len(data), doc) if doc.subject else None
        entry = ctx.subjects[key]
        if entry is None:
            continue
        media_type, size, parsed = entry
        assert isinstance(parsed, Manifest | Index)
        if parsed.subject is not None and parsed.subject.digest == subject:
            out.append((Descriptor(media_type, digest, size), parsed))
    return out


async def referrers(ctx: Context, request: web.Request, route: p.Route) -> web.StreamResponse:
    assert route.name is not None and route.digest is not None
    # distribution-spec "Listing Referrers": never 404 for a known API; an unknown
    # subject or repository answers an empty index.
    found = await ctx.call(_candidates, ctx, route.name, route.digest)
    body, headers = p.referrers_response(route.digest, found, route.artifact_type)
    return web.Response(status=200, body=body, headers={**BASE_HEADERS, **headers})
