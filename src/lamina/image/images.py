"""Images in a store: resolve a name to a manifest and config, list, tag, untag.

An image is a ref (a full reference string such as ``docker.io/library/busybox:latest``)
naming a manifest or an index. The user may also name an image by its manifest digest
(``sha256:…``), by its image ID (the config digest, as Docker shows it) or by a unique
prefix of that ID of at least 4 hex digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamina.errors import (
    Conflict,
    InvalidArgument,
    InvalidReference,
    LaminaError,
    LimitExceeded,
    NotFound,
)
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference
from lamina.oci.selection import select_manifest
from lamina.store.api import Store
from lamina.store.gc import manifests_naming

_HEX = frozenset("0123456789abcdef")

# A loaded image nobody named (an OCI layout entry with only a tag, as `docker load`
# leaves `<none>:<none>`) is kept under this ref so that gc spares it and its ID
# resolves; user input never normalises to it.
DANGLING_PREFIX = "@"


def dangling_name(digest: Digest) -> str:
    return f"{DANGLING_PREFIX}{digest}"


def is_dangling(name: str) -> bool:
    return name.startswith(DANGLING_PREFIX)


@dataclass(frozen=True, slots=True)
class Image:
    """One resolved image: the names it goes by, its manifest and its config."""

    names: tuple[str, ...]
    descriptor: Descriptor  # what the ref names: a manifest, or an index
    manifest_descriptor: Descriptor  # the platform's manifest
    manifest: Manifest
    config: ImageConfig

    @property
    def id(self) -> Digest:
        """Docker's image ID: the config digest."""
        return self.manifest.config.digest

    @property
    def size(self) -> int:
        """Bytes in the store: layers, config and manifest (compressed, as stored)."""
        return (
            sum(layer.size for layer in self.manifest.layers)
            + self.manifest.config.size
            + self.manifest_descriptor.size
        )


def normalize(name: str) -> str:
    """The ref key under which ``name`` is stored (full reference, tag defaulted)."""
    return str(Reference.parse(name))


def load_image(
    store: Store,
    descriptor: Descriptor,
    names: tuple[str, ...] = (),
    platform: Platform | None = None,
) -> Image:
    """Read and parse the manifest (choosing the platform's one from an index) and config."""
    doc = parse_document(store.read_blob(descriptor.digest), descriptor.media_type)
    manifest_desc = descriptor
    if isinstance(doc, Index):
        manifest_desc = select_manifest(doc, platform or Platform.host())
        doc = parse_document(store.read_blob(manifest_desc.digest), manifest_desc.media_type)
        if isinstance(doc, Index):
            raise InvalidArgument(
                f"image {descriptor.digest} nests indexes, which lamina does not follow"
            )
    config = ImageConfig.parse(store.read_blob(doc.config.digest))
    return Image(names, descriptor, manifest_desc, doc, config)


def _is_hex_prefix(text: str) -> bool:
    return 4 <= len(text) <= 64 and set(text) <= _HEX


def resolve(store: Store, text: str, platform: Platform | None = None) -> Image:
    """Find an image by name, manifest digest, image ID or ID prefix."""
    refs = store.list_refs()
    key: str | None = None
    try:
        key = normalize(text)
    except InvalidReference:
        key = None
    if key is not None and key in refs:
        return load_image(store, refs[key], _names_of(refs, refs[key].digest), platform)
    # sha256:<hex> names a manifest (or index) digest, or an image ID.
    wanted = text.removeprefix("sha256:")
    if _is_hex_prefix(wanted):
        matches: dict[Digest, Image] = {}
        for desc in refs.values():
            if desc.digest in matches:
                continue  # another name of an image already matched
            try:
                image = load_image(store, desc, platform=platform)
            except NotFound:
                continue
            if desc.digest.encoded.startswith(wanted) or image.id.encoded.startswith(wanted):
                matches.setdefault(desc.digest, image)
        if len(matches) == 1:
            ((digest, image),) = matches.items()
            return Image(
                _names_of(refs, digest),
                image.descriptor,
                image.manifest_descriptor,
                image.manifest,
                image.config,
            )
        if len(matches) > 1:
            raise Conflict(
                f"{text!r} matches {len(matches)} images", hint="give more digits of the ID"
            )
        if len(wanted) == 64:
            # A full ID that no name reaches: an image untagged with `rmi -f` while a
            # container kept its content (Docker still runs and commits it by ID).
            unnamed = _unnamed(store, Digest.parse(f"sha256:{wanted}"), platform)
            if unnamed is not None:
                return unnamed
    raise NotFound(f"image {text!r} not found", hint="list local images with `lamina images`")


def _unnamed(store: Store, wanted: Digest, platform: Platform | None) -> Image | None:
    """The image whose manifest (or config, the image ID) is ``wanted``, among blobs no
    name reaches; None when the store holds no such manifest."""
    if not store.has(wanted):
        return None
    try:
        head = store.read_blob(wanted)
        doc = parse_document(head)
    except (InvalidArgument, LimitExceeded):
        doc = None
    if isinstance(doc, Manifest | Index):
        desc = Descriptor(doc.media_type, wanted, len(head))
        return load_image(store, desc, platform=platform)
    found = manifests_naming(store, store.iter_blobs(), {wanted: "image"})
    if not found:
        return None
    return load_image(store, min(found.values(), key=lambda d: str(d.digest)), platform=platform)


def _names_of(refs: dict[str, Descriptor], digest: Digest) -> tuple[str, ...]:
    return tuple(sorted(name for name, d in refs.items() if d.digest == digest))


def list_images(
    store: Store, on_error: Callable[[str, LaminaError], None] | None = None
) -> list[tuple[str, Image]]:
    """Every (name, image), sorted by name. With ``on_error``, an image that cannot
    be read (a blob missing, a document malformed or over its cap) is skipped and
    handed to it with the error: one bad record never hides the rest (``lamina
    images``). Without, only images with a missing blob or a malformed document are
    skipped and anything else raises, so a caller deciding what to delete (snapshot
    prune) never mistakes an unreadable image for an absent one."""
    out: list[tuple[str, Image]] = []
    refs = store.list_refs()
    cache: dict[Digest, Image] = {}
    bad: dict[Digest, LaminaError] = {}
    for name in sorted(refs):
        desc = refs[name]
        image = cache.get(desc.digest)
        if image is None:
            if desc.digest in bad:
                continue
            try:
                image = load_image(store, desc, _names_of(refs, desc.digest))
            except LaminaError as exc:
                if on_error is None and not isinstance(exc, NotFound | InvalidArgument):
                    raise
                bad[desc.digest] = exc
                if on_error is not None:
                    on_error(name, exc)
                continue
            cache[desc.digest] = image
        out.append((name, image))
    return out


def tag(store: Store, source: str, target: str) -> str:
    image = resolve(store, source)
    key = normalize(target)
    store.set_ref(key, image.descriptor)
    dangling = dangling_name(image.descriptor.digest)
    if dangling in image.names:
        store.delete_ref(dangling)
    return key


def untag(store: Store, text: str, force: bool = False) -> list[str]:
    """Remove a name; given an ID, remove all its names (only with ``force`` if several)."""
    refs = store.list_refs()
    try:
        key = normalize(text)
    except InvalidReference:
        key = None
    if key is not None and key in refs:
        store.delete_ref(key)
        return [key]
    image = resolve(store, text)
    if len(image.names) > 1 and not force:
        raise Conflict(
            f"image {image.id.encoded[:12]} has several names: {', '.join(image.names)}",
            hint="remove them by name, or use -f to remove them all",
        )
    for name in image.names:
        store.delete_ref(name)
    return list(image.names)
