"""docker-archive: the ``docker save`` / ``docker load`` tar, in and out.

Two flavours exist and lamina reads and writes both:

- **OCI flavour** (Docker >= 25, ``ctr images export``; lamina's default): an OCI image
  layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) plus Docker's
  ``manifest.json`` (``Config`` and ``Layers`` are ``blobs/sha256/<hex>`` paths) and
  ``repositories``. Layers stay as stored (compressed): ``docker load``, skopeo's
  ``docker-archive:`` transport (which decompresses what it finds) and ``ctr images
  import`` (which reads ``index.json``) all accept them; the interop tests prove it.
- **legacy flavour** (``legacy=True``; Docker < 25, skopeo): ``<config-hex>.json``,
  ``<layer-id>/layer.tar`` (uncompressed), ``<layer-id>/json``, ``<layer-id>/VERSION``,
  ``manifest.json`` and ``repositories``.

Reading, ``manifest.json`` decides. Each entry's config and layer files are found by
path (following the archive's own symlinks, as skopeo writes ``<id>/layer.tar`` links);
a path that leaves the archive (``../x``, ``/x``) is refused. Layers are stored exactly as
the archive holds them: an uncompressed tar is stored as is with media type
``application/vnd.oci.image.layer.v1.tar`` (so its digest *is* its diff_id); a gzip or
zstd layer keeps its compression. Every layer's diff_id is checked against the config's
``rootfs.diff_ids`` before anything is tagged, and lamina writes a fresh OCI manifest
(canonical JSON) for each image. ``LayerSources`` (foreign-layer descriptors) is written
for non-distributable layers and ignored on reading: the layer bytes in the archive are
what lamina keeps.

:func:`load_archive` is what ``lamina load`` calls: one pass over any archive (a layout
directory or tar, either docker flavour, gzip/zstd-compressed or not, stdin included),
the format decided from the members seen. :func:`detect_archive_format` tells the format
without loading (it only reads tar headers of an uncompressed file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lamina.errors import (
    DigestMismatch,
    IntegrityError,
    InvalidArgument,
    InvalidFormat,
)
from lamina.image.archives.closure import MAX_INDEX_DEPTH, is_foreign, read_document, walk_image
from lamina.image.archives.oci_layout import (
    import_oci_layout,
    index_document,
    index_entry,
    layout_entries,
    layout_header,
    tag_layout_images,
)
from lamina.image.archives.tar_io import (
    CHUNK,
    ArchiveOut,
    ArchiveScan,
    LoadedImage,
    Progress,
    blob_path,
    list_member_names,
    open_layer,
    open_output,
    repo_tag,
    scan_archive,
    source_stream,
)
from lamina.image.images import normalize
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import (
    MAX_DOCUMENT_BYTES,
    canonical_json,
    check_document_size,
    load_json_object,
)
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest, Digester
from lamina.oci.layout import INDEX_FILE
from lamina.oci.layout import OCI_LAYOUT_FILE as LAYOUT_FILE
from lamina.oci.manifest import Index, Manifest
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.oci.selection import select_manifest
from lamina.store.api import Store

MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"


@dataclass(frozen=True, slots=True)
class _SavedImage:
    """One image as docker-archive sees it: a single-platform manifest and its names."""

    manifest_desc: Descriptor
    manifest: Manifest
    diff_ids: tuple[Digest, ...]
    refs: tuple[Reference, ...]


# ---------------------------------------------------------------------------------------
# export


def export_docker_archive(
    store: Store,
    images: Sequence[tuple[Reference, Descriptor]],
    dest: str,
    *,
    legacy: bool = False,
    platform: Platform | None = None,
    progress: Progress | None = None,
) -> None:
    """Write ``images`` as one ``docker save`` tar at ``dest`` (``-`` is stdout).

    An image given as an index is saved as its manifest for ``platform`` (default: the
    host's), since docker-archive holds one platform per image. Images sharing a manifest
    share one ``manifest.json`` entry with several ``RepoTags``. ``progress`` gets the
    bytes as they are written (and, for the OCI flavour, the total first).
    """
    if not images:
        raise InvalidArgument("no images to export")
    want = platform or Platform.host()
    with store.lease():
        saved = _collect(store, images, want)
        if progress is not None and not legacy:
            blobs = {
                d.digest: d.size for i in saved for d in (i.manifest.config, *i.manifest.layers)
            }
            progress(0, total=sum(blobs.values()))
        with open_output(dest) as out:
            tar = ArchiveOut(out, progress)
            if legacy:
                _write_legacy(store, tar, saved)
            else:
                _write_oci_flavour(store, tar, saved)
            tar.close()


def _collect(
    store: Store, images: Sequence[tuple[Reference, Descriptor]], want: Platform
) -> list[_SavedImage]:
    by_digest: dict[Digest, _SavedImage] = {}
    for ref, root in images:
        desc = _select_platform(store, root, want)
        walk_image(store, desc, allow_external=False)
        prior = by_digest.get(desc.digest)
        if prior is not None:
            by_digest[desc.digest] = _SavedImage(
                prior.manifest_desc, prior.manifest, prior.diff_ids, (*prior.refs, ref)
            )
            continue
        manifest = read_document(store, desc)
        assert isinstance(manifest, Manifest)  # _select_platform returns manifests only
        diff_ids = _diff_ids(store.read_blob(manifest.config.digest, MAX_DOCUMENT_BYTES))
        if len(diff_ids) != len(manifest.layers):
            raise InvalidFormat(
                f"image {ref} has {len(manifest.layers)} layers but its config lists "
                f"{len(diff_ids)} diff_ids"
            )
        by_digest[desc.digest] = _SavedImage(desc, manifest, diff_ids, (ref,))
    return list(by_digest.values())


def _select_platform(store: Store, desc: Descriptor, want: Platform) -> Descriptor:
    for _ in range(MAX_INDEX_DEPTH):
        doc = read_document(store, desc)
        if isinstance(doc, Manifest):
            return desc
        if not isinstance(doc, Index):
            raise InvalidArgument(f"{desc.digest} ({desc.media_type}) is not an image")
        desc = select_manifest(doc, want)
    raise InvalidFormat(f"indexes under {desc.digest} nest too deeply")


def _diff_ids(config: bytes) -> tuple[Digest, ...]:
    # image-spec config.md: rootfs.diff_ids is REQUIRED, one per layer, in order.
    return ImageConfig.parse(config).diff_ids


def legacy_layer_ids(diff_ids: Sequence[Digest], config: Digest) -> list[str]:
    """The ``<layer-id>`` directory names of the legacy format.

    Only their uniqueness matters to readers. Each id covers its parent's id and its
    diff_id, and the top one also the config (in the legacy format the top layer's
    ``json`` *is* the image config, so two images with the same layers but different
    configs need different top ids). Deterministic, so saves are reproducible.
    """
    ids: list[str] = []
    parent = ""
    for i, diff_id in enumerate(diff_ids):
        material = f"{parent}\n{diff_id}"
        if i == len(diff_ids) - 1:
            material += f"\n{config}"
        parent = Digest.from_bytes(material.encode()).encoded
        ids.append(parent)
    return ids


def _repositories(saved: Sequence[_SavedImage]) -> bytes:
    repos: dict[str, dict[str, str]] = {}
    for image in saved:
        ids = legacy_layer_ids(image.diff_ids, image.manifest.config.digest)
        if not ids:
            continue
        for ref in image.refs:
            if ref.tag is not None:
                repos.setdefault(ref.familiar_name, {})[ref.tag] = ids[-1]
    return canonical_json(repos)


def _manifest_json(saved: Sequence[_SavedImage], *, legacy: bool) -> bytes:
    items: list[dict[str, Any]] = []
    for image in saved:
        config = image.manifest.config.digest
        ids = legacy_layer_ids(image.diff_ids, config)
        item: dict[str, Any] = {
            "RepoTags": [t for t in map(repo_tag, image.refs) if t is not None],
        }
        if legacy:
            item["Config"] = f"{config.encoded}.json"
            item["Layers"] = [f"{layer_id}/layer.tar" for layer_id in ids]
        else:
            item["Config"] = blob_path(config)
            item["Layers"] = [blob_path(layer.digest) for layer in image.manifest.layers]
            sources = {
                str(diff_id): layer.to_json()
                for layer, diff_id in zip(image.manifest.layers, image.diff_ids, strict=True)
                if is_foreign(layer)
            }
            if sources:
                item["LayerSources"] = sources
        items.append(item)
    return canonical_json(items)


def _write_oci_flavour(store: Store, tar: ArchiveOut, saved: Sequence[_SavedImage]) -> None:
    blobs: dict[Digest, Descriptor] = {}
    entries: list[Descriptor] = []
    for image in saved:
        blobs.setdefault(image.manifest_desc.digest, image.manifest_desc)
        blobs.setdefault(image.manifest.config.digest, image.manifest.config)
        for layer in image.manifest.layers:
            blobs.setdefault(layer.digest, layer)
        for ref in image.refs:
            entries.append(index_entry(ref, _plain(image.manifest_desc)))
    files: dict[str, bytes | Descriptor] = {blob_path(d): desc for d, desc in blobs.items()}
    files[INDEX_FILE] = index_document([e.to_json() for e in entries])
    files[LAYOUT_FILE] = layout_header()
    files[MANIFEST_FILE] = _manifest_json(saved, legacy=False)
    files[REPOSITORIES_FILE] = _repositories(saved)
    for name in sorted(files):
        value = files[name]
        if isinstance(value, bytes):
            tar.add_bytes(name, value)
        else:
            tar.add_blob(name, store, value)


def _plain(desc: Descriptor) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size, platform=desc.platform)


def _write_legacy(store: Store, tar: ArchiveOut, saved: Sequence[_SavedImage]) -> None:
    # name -> ("bytes", data) | ("blob", descriptor) | ("layer", (descriptor, diff_id))
    files: dict[str, tuple[str, Any]] = {}
    for image in saved:
        config = image.manifest.config
        config_bytes = store.read_blob(config.digest, MAX_DOCUMENT_BYTES)
        files[f"{config.digest.encoded}.json"] = ("blob", config)
        ids = legacy_layer_ids(image.diff_ids, config.digest)
        parent = ""
        for i, (layer_id, layer, diff_id) in enumerate(
            zip(ids, image.manifest.layers, image.diff_ids, strict=True)
        ):
            top = i == len(ids) - 1
            files[f"{layer_id}/VERSION"] = ("bytes", b"1.0")
            files[f"{layer_id}/json"] = ("bytes", _legacy_json(layer_id, parent, config_bytes, top))
            files[f"{layer_id}/layer.tar"] = ("layer", (layer, diff_id))
            parent = layer_id
    files[MANIFEST_FILE] = ("bytes", _manifest_json(saved, legacy=True))
    files[REPOSITORIES_FILE] = ("bytes", _repositories(saved))
    for name in sorted(files):
        kind, value = files[name]
        if kind == "bytes":
            tar.add_bytes(name, value)
        elif kind == "blob":
            tar.add_blob(name, store, value)
        else:
            _add_uncompressed_layer(store, tar, name, *value)


def _legacy_json(layer_id: str, parent: str, config: bytes, top: bool) -> bytes:
    """A legacy ``<id>/json``: the image config (without rootfs and history) on the top
    layer, a bare record below it, as Docker wrote them."""
    obj: dict[str, Any] = {"id": layer_id}
    if top:
        image = load_json_object(config, "image config")
        for key, value in image.items():
            if key not in ("rootfs", "history"):
                obj[key] = value
        obj["id"] = layer_id
    else:
        obj["created"] = "1970-01-01T00:00:00Z"
        obj["container_config"] = {"Cmd": None}
    if parent:
        obj["parent"] = parent
    return canonical_json(obj)


class _DiffIdReader:
    """Reads an uncompressed layer from its stored (maybe compressed) blob, hashing it."""

    def __init__(self, store: Store, layer: Descriptor, *, hash_it: bool = True) -> None:
        self._raw = store.open_blob(layer.digest, layer.size)
        self._plain = open_layer(self._raw, layer.media_type)
        self.digester = Digester()
        self._hash_it = hash_it
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._plain.read(n)
        self.size += len(data)
        if self._hash_it:
            self.digester.update(data)
        return data

    def finish(self) -> None:
        """Read the compressed blob to EOF, where the store checks its digest."""
        while self._raw.read(CHUNK):
            pass

    def close(self) -> None:
        self._plain.close()
        self._raw.close()


def _add_uncompressed_layer(
    store: Store, tar: ArchiveOut, name: str, layer: Descriptor, diff_id: Digest
) -> None:
    if not mt.LAYER_COMPRESSION.get(layer.media_type, ""):
        if layer.digest != diff_id:
            raise DigestMismatch(f"layer {layer.digest} is uncompressed but not diff_id {diff_id}")
        tar.add_blob(name, store, layer)
        return
    # A tar header needs the size before the content, and only decompressing tells it:
    # pass 1 counts, pass 2 streams and checks the diff_id (a mismatch raises, and
    # open_output then drops the partial archive). Nothing is held in memory or staged.
    counter = _DiffIdReader(store, layer, hash_it=False)
    try:
        while counter.read(CHUNK):
            pass
        counter.finish()
    finally:
        counter.close()
    reader = _DiffIdReader(store, layer)
    try:
        tar.add_stream(name, counter.size, reader)
        if reader.read(1):
            raise IntegrityError(f"layer {layer.digest} grew while being saved")
        reader.finish()
    finally:
        reader.close()
    got = reader.digester.digest()
    if got != diff_id:
        raise DigestMismatch(
            f"layer {layer.digest} decompresses to {got}, but the config says diff_id {diff_id}"
        )


# ---------------------------------------------------------------------------------------
# import


def import_docker_archive(
    store: Store, src: str, *, progress: Progress | None = None
) -> list[LoadedImage]:
    """Load every image of a ``docker save`` tar (either flavour; ``-`` is stdin) through
    its ``manifest.json``.

    Raises InvalidFormat for a malformed ``manifest.json`` or config, Unsafe for a path
    leaving the archive, NotFound for a missing file, DigestMismatch when a layer does
    not match its diff_id. Nothing is tagged unless every image checks out.
    """
    if os.path.isdir(src):
        raise InvalidArgument(f"{src} is a directory; a docker archive is a tar file")
    with store.lease():
        with source_stream(src, progress) as stream:
            scan = scan_archive(store, stream, spool_other=True)
        return _load_docker_scan(store, scan, src)


def load_archive(
    store: Store,
    src: str,
    *,
    ref_name: str | None = None,
    progress: Progress | None = None,
) -> tuple[str, list[LoadedImage]]:
    """Load any image archive in one pass: an OCI layout directory or tar, or a docker
    archive; ``-`` reads a tar from stdin. Returns the format found (as
    :func:`detect_archive_format` names it) and the images.

    The format is decided after the pass, from the members seen: ``oci-layout`` with
    ``index.json`` is read as an OCI layout (it has the full manifests, even when a
    ``manifest.json`` is there too), else ``manifest.json`` as a docker archive.
    ``ref_name`` names tag-only OCI entries (see :mod:`lamina.image.archives.oci_layout`).
    """
    if os.path.isdir(src):
        return "oci-dir", import_oci_layout(store, src, ref_name=ref_name, progress=progress)
    with store.lease():
        with source_stream(src, progress) as stream:
            scan = scan_archive(store, stream, spool_other=True)
        if LAYOUT_FILE in scan.metadata and INDEX_FILE in scan.metadata:
            entries = layout_entries(scan, src)
            return "oci-layout", tag_layout_images(store, entries, ref_name)
        if MANIFEST_FILE in scan.metadata:
            return "docker-archive", _load_docker_scan(store, scan, src)
        raise InvalidFormat(
            f"{src} is neither an OCI image layout nor a docker archive",
            hint="expected oci-layout + index.json, or manifest.json, at the top of the tar",
        )


def _load_docker_scan(store: Store, scan: ArchiveScan, src: str) -> list[LoadedImage]:
    raw = scan.metadata.get(MANIFEST_FILE)
    if raw is None:
        raise InvalidFormat(
            f"{src} is not a docker archive: it has no {MANIFEST_FILE}",
            hint="for an OCI image layout use the oci format",
        )
    # Every entry is checked (config, files, diff_ids) before any manifest or ref is written.
    prepared = [_prepare(store, scan, item, i) for i, item in enumerate(_entries(raw))]
    loaded: list[LoadedImage] = []
    for manifest, names in prepared:
        data = manifest.to_bytes()
        store.put_bytes(data, Digest.from_bytes(data))
        desc = manifest.to_descriptor()
        for name in names:
            store.set_ref(name, desc)
            loaded.append(LoadedImage(name, desc))
        if not names:
            loaded.append(LoadedImage(None, desc))
    return loaded


def _entries(raw: bytes) -> list[dict[str, Any]]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFormat(f"{MANIFEST_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidFormat(f"{MANIFEST_FILE} must be a JSON array of objects")
    if not value:
        raise InvalidFormat(f"{MANIFEST_FILE} lists no images")
    return value


def _prepare(
    store: Store, scan: ArchiveScan, item: dict[str, Any], i: int
) -> tuple[Manifest, list[str]]:
    what = f"{MANIFEST_FILE}[{i}]"
    config_path = item.get("Config")
    layers = item.get("Layers")
    tags = item.get("RepoTags") or []
    if not isinstance(config_path, str) or not config_path:
        raise InvalidFormat(f"{what} has no Config path")
    if not isinstance(layers, list) or not all(isinstance(p, str) for p in layers):
        raise InvalidFormat(f"{what} has a malformed Layers list")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidFormat(f"{what} has a malformed RepoTags list")
    config_digest, config_size = scan.resolve(config_path)
    check_document_size("config", config_size, what)
    config = store.read_blob(config_digest, MAX_DOCUMENT_BYTES)
    diff_ids = _diff_ids(config)
    if len(diff_ids) != len(layers):
        raise InvalidFormat(
            f"{what} lists {len(layers)} layers but its config has {len(diff_ids)} diff_ids"
        )
    descs = [
        _layer(store, scan, path, diff_id) for path, diff_id in zip(layers, diff_ids, strict=True)
    ]
    manifest = Manifest(
        config=Descriptor(mt.OCI_CONFIG, config_digest, config_size), layers=tuple(descs)
    )
    return manifest, [normalize(t) for t in tags]


def _layer(store: Store, scan: ArchiveScan, path: str, diff_id: Digest) -> Descriptor:
    digest, size = scan.resolve(path)
    # Legacy archives hold plain tars, Docker >= 25 and skopeo may hold gzip or zstd.
    with store.open_blob(digest, size) as raw:
        plain = open_layer(raw)
        kind = plain.kind
        if kind == "" and digest.algorithm == diff_id.algorithm:
            got = digest  # a plain tar is its own diff_id; the store verified the digest
        else:
            digester = Digester(diff_id.algorithm)
            while chunk := plain.read(CHUNK):
                digester.update(chunk)
            while raw.read(CHUNK):  # to EOF: the store verifies the blob there
                pass
            got = digester.digest()
    # image-spec config.md: each diff_id is the digest of the layer's uncompressed tar.
    if got != diff_id:
        raise DigestMismatch(
            f"layer {path} has diff_id {got}, but the image config says {diff_id}",
            hint="the archive is damaged or was altered",
        )
    return Descriptor(mt.OCI_LAYER_BY_COMPRESSION[kind], digest, size)


def detect_archive_format(path: str) -> str:
    """``"oci-dir"`` for a layout directory, ``"oci-layout"`` for a tar with ``oci-layout``
    and ``index.json`` (even with a ``manifest.json``: the OCI side has the full
    manifests), ``"docker-archive"`` for a tar with only ``manifest.json``.

    Reads only tar headers, seeking over content, so it is cheap on big archives.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, LAYOUT_FILE)):
            return "oci-dir"
        raise InvalidFormat(f"{path} is a directory but not an OCI image layout (no {LAYOUT_FILE})")
    names = list_member_names(path, {LAYOUT_FILE, INDEX_FILE, MANIFEST_FILE})
    if LAYOUT_FILE in names and INDEX_FILE in names:
        return "oci-layout"
    if MANIFEST_FILE in names:
        return "docker-archive"
    raise InvalidFormat(
        f"{path} is neither an OCI image layout nor a docker archive",
        hint="expected oci-layout + index.json, or manifest.json, at the top of the tar",
    )
