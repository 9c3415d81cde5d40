"""OCI image layout (image-spec image-layout.md) in and out, as a directory or a tar.

A layout is ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an
image index naming the images) and ``blobs/<alg>/<encoded>``.

Names. Each ``index.json`` descriptor lamina writes carries two annotations:
``org.opencontainers.image.ref.name`` = the *tag* only (what ``skopeo oci:DIR:TAG`` and
``umoci --image DIR:TAG`` look up) and ``io.containerd.image.name`` = the full reference
(what ``ctr images import`` names the image by). Reading, the name of an entry is, in
order:

1. ``io.containerd.image.name``, normalised (``busybox`` -> ``docker.io/library/busybox:latest``);
2. ``org.opencontainers.image.ref.name`` when it is a full reference. A tag can contain
   neither ``/`` nor ``:`` (distribution-spec tag grammar), so a value with either is
   parsed as a reference (``busybox:1``, ``example.com/app``); if it does not parse, the
   entry is unnamed;
3. a tag-only ``ref.name`` with the caller's ``ref_name`` (a repository such as
   ``example.com/app``; any tag or digest on it is dropped): ``<ref_name>:<tag>``;
4. otherwise ``None``: the image is loaded and the caller shows its digest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, cast

from lamina.errors import InvalidArgument, InvalidFormat, LaminaError, NotFound, Unsafe
from lamina.image.archives.closure import MAX_INDEX_DEPTH, is_foreign, read_document, walk_image
from lamina.image.archives.tar_io import (
    CHUNK,
    ArchiveOut,
    ArchiveScan,
    CountingReader,
    LoadedImage,
    Progress,
    blob_path,
    name_with_tag,
    open_output,
    scan_archive,
    source_stream,
)
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import (
    MAX_DOCUMENT_BYTES,
    canonical_json,
    check_document_size,
    load_json_object,
)
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.layout import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
    INDEX_FILE,
    OCI_LAYOUT_FILE,
    OCI_LAYOUT_JSON,
    check_layout_file,
)
from lamina.oci.manifest import Index, Manifest
from lamina.oci.reference import Reference
from lamina.store.api import Store

LAYOUT_FILE = OCI_LAYOUT_FILE
ANNOTATION_IMAGE_NAME = ANNOTATION_CONTAINERD_NAME


def layout_header() -> bytes:
    return OCI_LAYOUT_JSON


def index_entry(ref: Reference | None, desc: Descriptor) -> Descriptor:
    """The ``index.json`` descriptor of one image, annotated with its names."""
    if ref is None:
        return desc
    annotations = dict(desc.annotations)
    annotations[ANNOTATION_IMAGE_NAME] = str(ref)
    tag = ref.tag
    if tag:
        annotations[ANNOTATION_REF_NAME] = tag
    return desc.with_annotations(annotations)


def index_document(entries: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] = {}) -> bytes:
    doc = dict(extra)
    doc.update({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": list(entries)})
    return canonical_json(doc)


# ---------------------------------------------------------------------------------------
# export


def export_oci_layout(
    store: Store,
    images: Sequence[tuple[Reference | None, Descriptor]],
    dest: str,
    *,
    as_tar: bool,
    progress: Progress | None = None,
) -> None:
    """Write ``images`` (each a reference, or None, and the descriptor of its manifest or
    index) as an OCI image layout: a directory at ``dest``, or a tar file (``-`` is stdout).

    Every blob is copied through the store's verifying reader. A directory that already
    holds a layout is added to: entries with the same ``ref.name`` are replaced (as
    skopeo does), and blobs already there are kept. Raises NotFound if a blob of an image
    is missing from the store, before anything is written. ``progress`` gets the total
    blob bytes, then the bytes as they are written.
    """
    if not images:
        raise InvalidArgument("no images to export")
    with store.lease():
        blobs: dict[Digest, Descriptor] = {}
        entries: list[Descriptor] = []
        for ref, desc in images:
            for digest, blob in walk_image(store, desc).blobs.items():
                blobs.setdefault(digest, blob)
            entries.append(index_entry(ref, desc))
        if progress is not None:
            progress(0, total=sum(b.size for b in blobs.values()))
        if as_tar:
            with open_output(dest) as out:
                tar = ArchiveOut(out, progress)
                for digest in sorted(blobs, key=blob_path):
                    tar.add_blob(blob_path(digest), store, blobs[digest])
                tar.add_bytes(INDEX_FILE, index_document([e.to_json() for e in entries]))
                tar.add_bytes(LAYOUT_FILE, layout_header())
                tar.close()
        else:
            if dest == "-":
                raise InvalidArgument(
                    "an OCI layout directory cannot go to stdout", hint="use a tar"
                )
            _export_dir(store, blobs, entries, dest, progress)


def _export_dir(
    store: Store,
    blobs: Mapping[Digest, Descriptor],
    entries: Sequence[Descriptor],
    dest: str,
    progress: Progress | None,
) -> None:
    existing = _open_existing_layout(dest)
    for digest in sorted(blobs, key=blob_path):
        _copy_blob(store, blobs[digest], dest, progress)
    replaced_tags = {e.annotations.get(ANNOTATION_REF_NAME) for e in entries} - {None}
    replaced_names = {e.annotations.get(ANNOTATION_IMAGE_NAME) for e in entries} - {None}
    kept: list[Mapping[str, Any]] = []
    extra: dict[str, Any] = {}
    if existing is not None:
        extra = {k: v for k, v in existing.items() if k == "annotations"}
        for item in existing.get("manifests", []):
            notes = item.get("annotations") if isinstance(item, dict) else None
            if not isinstance(notes, dict):
                notes = {}
            if notes.get(ANNOTATION_REF_NAME) in replaced_tags:
                continue
            if notes.get(ANNOTATION_IMAGE_NAME) in replaced_names:
                continue
            kept.append(item)
    doc = index_document([*kept, *(e.to_json() for e in entries)], extra)
    if existing is None:
        _write_atomic(dest, LAYOUT_FILE, layout_header())
    _write_atomic(dest, INDEX_FILE, doc)


def _open_existing_layout(dest: str) -> dict[str, Any] | None:
    """The current index.json of a layout at ``dest``; None for a new or empty directory."""
    try:
        names = os.listdir(dest)
    except FileNotFoundError:
        os.makedirs(dest, mode=0o755)
        return None
    except NotADirectoryError as exc:
        raise InvalidArgument(f"{dest} exists and is not a directory") from exc
    if not names:
        return None
    if LAYOUT_FILE not in names:
        raise InvalidArgument(
            f"{dest} is not empty and not an OCI image layout",
            hint="choose a new or empty directory, or an existing OCI layout",
        )
    _check_layout_header(_read_small(dest, LAYOUT_FILE), dest)
    if INDEX_FILE not in names:
        return None
    existing = load_json_object(_read_small(dest, INDEX_FILE), f"{dest}/{INDEX_FILE}")
    if not isinstance(existing.get("manifests", []), list):
        raise InvalidFormat(f"{dest}/{INDEX_FILE} has a malformed 'manifests' field")
    return existing


def _copy_blob(store: Store, desc: Descriptor, dest: str, progress: Progress | None) -> None:
    path = os.path.join(dest, blob_path(desc.digest))
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == desc.size:
            return  # content-addressed: a file of the right size under this name is kept
    with open_output(path) as out, store.open_blob(desc.digest, desc.size) as src:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            if progress is not None:
                progress(len(chunk))


def _write_atomic(directory: str, name: str, data: bytes) -> None:
    with open_output(os.path.join(directory, name)) as out:
        out.write(data)


# ---------------------------------------------------------------------------------------
# import


def import_oci_layout(
    store: Store,
    src: str,
    *,
    ref_name: str | None = None,
    progress: Progress | None = None,
) -> list[LoadedImage]:
    """Load every image of the OCI layout at ``src`` (a directory, a tar, or ``-`` for a
    tar on stdin) into the store and tag the named ones (see the module docstring).

    Every blob is verified against its digest on the way in. Nothing is tagged unless
    every image in ``index.json`` is complete: a missing manifest, config or layer raises
    NotFound naming the digest. Blobs ingested before an error stay unreferenced until
    the next ``gc``; no unverified byte is ever admitted. ``progress(n)`` is called with
    the bytes read as they stream.
    """
    with store.lease():
        if os.path.isdir(src):
            header = _read_small(src, LAYOUT_FILE)
            index = _read_small(src, INDEX_FILE)
            _check_layout_header(header, src)
            entries = _index_entries(index, src)
            for entry in entries:
                _ingest_from_dir(store, src, entry, 0, progress)
        else:
            with source_stream(src, progress) as stream:
                scan = scan_archive(store, stream, spool_other=False)
            entries = layout_entries(scan, src)
        return tag_layout_images(store, entries, ref_name)


def layout_entries(scan: ArchiveScan, src: str) -> list[Descriptor]:
    """The ``index.json`` entries of a scanned layout tar, after checking ``oci-layout``."""
    if LAYOUT_FILE not in scan.metadata:
        raise InvalidFormat(
            f"{src} is not an OCI image layout: it has no {LAYOUT_FILE} file",
            hint="for a docker save archive use the docker-archive format",
        )
    _check_layout_header(scan.metadata[LAYOUT_FILE], src)
    if INDEX_FILE not in scan.metadata:
        raise InvalidFormat(f"{src} is not an OCI image layout: it has no {INDEX_FILE}")
    return _index_entries(scan.metadata[INDEX_FILE], src)


def tag_layout_images(
    store: Store, entries: Sequence[Descriptor], ref_name: str | None
) -> list[LoadedImage]:
    """Check that every image is complete in the store, then tag the named ones.

    The caller holds ``store.lease()``. Every image is validated before any is named, so
    a half-loaded archive tags nothing.
    """
    for entry in entries:
        walk_image(store, entry)
    names = [image_name(entry.annotations, ref_name) for entry in entries]
    loaded: list[LoadedImage] = []
    for entry, name in zip(entries, names, strict=True):
        target = Descriptor(entry.media_type, entry.digest, entry.size, platform=entry.platform)
        if name is not None:
            store.set_ref(name, target)
        loaded.append(LoadedImage(name, target))
    return loaded


def image_name(annotations: Mapping[str, str], ref_name: str | None = None) -> str | None:
    """The full reference an ``index.json`` entry names, by the rules of the module docstring."""
    full = annotations.get(ANNOTATION_IMAGE_NAME)
    if full:
        try:
            return str(Reference.parse(full))
        except LaminaError as exc:
            raise InvalidFormat(
                f"index.json names an image {full!r}, which is not a valid reference"
            ) from exc
    tag = annotations.get(ANNOTATION_REF_NAME)
    if not tag:
        return None
    if "/" in tag or ":" in tag:
        try:
            return str(Reference.parse(tag))
        except LaminaError:
            return None
    if ref_name is None:
        return None
    return name_with_tag(ref_name, tag)


def _check_layout_header(data: bytes, src: str) -> None:
    # image-layout.md: the oci-layout file MUST exist and name the layout version.
    try:
        check_layout_file(data)
    except InvalidFormat as exc:
        raise InvalidFormat(
            f"{src}: {exc.message}",
            hint=f"an OCI layout's {LAYOUT_FILE} holds {OCI_LAYOUT_JSON.decode()}",
        ) from exc


def _index_entries(data: bytes, src: str) -> list[Descriptor]:
    try:
        entries = list(Index.parse(data).manifests)
    except InvalidFormat as exc:
        raise InvalidFormat(f"{src}/{INDEX_FILE}: {exc.message}", hint=exc.hint) from exc
    if not entries:
        raise InvalidFormat(f"{src}/{INDEX_FILE} lists no images")
    return entries


def _read_small(directory: str, name: str) -> bytes:
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise InvalidFormat(
            f"{directory} is not an OCI image layout: it has no {name}",
            hint="point at the directory that holds oci-layout, index.json and blobs/",
        ) from exc
    except OSError as exc:
        raise InvalidFormat(f"cannot open {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidFormat(f"{path} is not a regular file")
        data = f.read(MAX_DOCUMENT_BYTES + 1)
    return data


def _ingest_from_dir(
    store: Store, root: str, desc: Descriptor, depth: int, progress: Progress | None
) -> None:
    """Ingest ``desc`` and, for manifests and indexes, what it names, from a layout dir."""
    if depth > MAX_INDEX_DEPTH:
        raise InvalidFormat(f"indexes in {root} nest deeper than {MAX_INDEX_DEPTH} levels")
    if desc.media_type in mt.MANIFEST_TYPES or desc.media_type in mt.INDEX_TYPES:
        check_document_size("manifest", desc.size, f"{desc.digest} in {root}")
    if not store.has(desc.digest):
        path = os.path.join(root, blob_path(desc.digest))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            if desc.urls and is_foreign(desc):
                return  # image-layout.md: blobs fulfilled externally may be absent
            raise NotFound(
                f"image is incomplete: {desc.digest} is missing from {root} "
                "(MANIFEST_BLOB_UNKNOWN)",
                hint="the layout does not hold every blob of the image; export it again",
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unsafe(
                    f"blob {path} is a symlink; lamina does not follow links in a layout",
                    hint="copy the layout with its blobs as plain files (cp -L)",
                ) from exc
            raise InvalidFormat(f"cannot open blob {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidFormat(f"blob {path} is not a regular file")
            # image-layout.md: blob content MUST match its digest; ingest verifies both.
            store.ingest(cast(BinaryIO, CountingReader(f, progress)), desc.digest, desc.size)
    doc = read_document(store, desc)
    children = doc.manifests if isinstance(doc, Index) else ()
    if isinstance(doc, Manifest):
        # refused before a byte of it is stored (images.md: the README's limits)
        check_document_size("config", doc.config.size, f"image {desc.digest} in {root}")
        children = (doc.config, *doc.layers)
    for child in children:
        _ingest_from_dir(store, root, child, depth + 1, progress)
