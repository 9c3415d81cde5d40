"""The closure of an image in the store: every blob reachable from one root descriptor.

:func:`walk_image` follows an image from its root descriptor through indexes and
manifests to configs and layers, checking that every blob is in the store (image-spec
image-layout.md: a layout holds every blob its index reaches, except layers "fulfilled
externally" at their ``urls``). Exporters use it to list what to copy; importers use it
to refuse an incomplete image before any ref names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.errors import IntegrityError, InvalidFormat, LimitExceeded, NotFound
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES, check_document_size
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.store.api import Store

# Nested indexes deeper than this are hostile or broken (content addressing rules out cycles).
MAX_INDEX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """One image manifest reached from a root, with its config and layers."""

    descriptor: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(slots=True)
class ImageClosure:
    """Everything reachable from one root descriptor.

    ``blobs`` holds every descriptor whose blob must be copied, in walk order (root
    first), keyed by digest; ``manifests`` the image manifests found; ``external`` the
    layers left out because they live at their ``urls`` (image-layout.md: blobs
    "fulfilled externally" may be absent).
    """

    blobs: dict[Digest, Descriptor] = field(default_factory=dict)
    manifests: list[ImageManifest] = field(default_factory=list)
    external: list[Descriptor] = field(default_factory=list)


def is_foreign(desc: Descriptor) -> bool:
    return desc.media_type in (
        mt.OCI_LAYER_NONDIST,
        mt.OCI_LAYER_NONDIST_GZIP,
        mt.OCI_LAYER_NONDIST_ZSTD,
        mt.DOCKER_LAYER_FOREIGN_GZIP,
    )


def read_document(store: Store, desc: Descriptor) -> Manifest | Index | None:
    """The manifest or index ``desc`` points at (None for any other media type)."""
    if desc.media_type not in mt.MANIFEST_TYPES and desc.media_type not in mt.INDEX_TYPES:
        return None
    data = store.read_blob(desc.digest, MAX_DOCUMENT_BYTES)
    try:
        return parse_document(data, desc.media_type)
    except InvalidFormat as exc:
        raise InvalidFormat(
            f"{desc.media_type} {desc.digest}: {exc.message}", hint=exc.hint
        ) from exc


def _require(store: Store, desc: Descriptor, role: str) -> None:
    try:
        info = store.info(desc.digest)
    except NotFound as exc:
        raise NotFound(
            f"image is incomplete: {role} {desc.digest} is missing (MANIFEST_BLOB_UNKNOWN)",
            hint="the source does not hold every blob of the image; export it again in full",
        ) from exc
    if info.size != desc.size:
        raise IntegrityError(
            f"{role} {desc.digest} is {info.size} bytes, but its descriptor says {desc.size}"
        )


def walk_image(store: Store, root: Descriptor, *, allow_external: bool = True) -> ImageClosure:
    """Follow ``root`` (a manifest or an index) to every blob it needs; all must be present.

    Raises NotFound naming the first missing digest. Descriptors of unknown media types
    in an index are required but not opened (image-spec: unknown types MUST NOT be errors).
    """
    closure = ImageClosure()
    _walk(store, root, closure, "manifest", 0, allow_external=allow_external)
    return closure


def _walk(
    store: Store,
    desc: Descriptor,
    closure: ImageClosure,
    role: str,
    depth: int,
    *,
    allow_external: bool,
) -> None:
    if desc.digest in closure.blobs:
        return
    if depth > MAX_INDEX_DEPTH:
        raise LimitExceeded(f"indexes nested deeper than {MAX_INDEX_DEPTH} levels")
    _require(store, desc, role)
    closure.blobs[desc.digest] = desc
    doc = read_document(store, desc)
    if isinstance(doc, Index):
        for child in doc.manifests:
            _walk(store, child, closure, "manifest", depth + 1, allow_external=allow_external)
    elif isinstance(doc, Manifest):
        config, layers = doc.config, doc.layers
        check_document_size("config", config.size, f"image {desc.digest}")
        _require(store, config, "config")
        closure.blobs.setdefault(config.digest, config)
        for layer in layers:
            if allow_external and layer.urls and is_foreign(layer) and not store.has(layer.digest):
                closure.external.append(layer)
                continue
            _require(store, layer, "layer")
            closure.blobs.setdefault(layer.digest, layer)
        closure.manifests.append(ImageManifest(desc, config, tuple(layers)))
