"""The mark phase of garbage collection: every digest reachable from the refs.

Works on any :class:`~lamina.store.api.Provider`; sweeping is the store's own business.
Children come from :func:`lamina.oci.manifest.referenced_descriptors` (config, layers,
manifests and subject). Rules:

- a blob that is absent is skipped (a partial pull, or a ref to content kept elsewhere);
- a blob *typed* as a manifest or index that cannot be read (damaged, oversized, or
  malformed) stops the collection: its children are unknown, and sweeping could delete
  what it names. The error names the ref it was reached from;
- a blob of another non-layer, non-config type is sniffed when small (an artifact
  manifest typed only in its own JSON); if it cannot be read it is a leaf;
- an image in use that no ref reaches any more is known only by its image ID (a
  container records the config digest): :func:`manifests_naming` finds the manifests
  whose config it is among the unmarked blobs, reading only small ones that start
  like JSON (a layer is gzip, zstd or tar, and is skipped after one byte).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lamina.errors import (
    IntegrityError,
    InvalidArgument,
    InvalidFormat,
    LimitExceeded,
    NotFound,
    SizeMismatch,
)
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest, parse_document, referenced_descriptors
from lamina.store.api import MAX_METADATA_BYTES, BlobInfo, Provider


def _is_document_type(media_type: str) -> bool:
    return media_type in mt.MANIFEST_TYPES or media_type in mt.INDEX_TYPES


def _is_leaf_type(media_type: str) -> bool:
    return mt.is_layer(media_type) or media_type in mt.CONFIG_TYPES or media_type == mt.OCI_EMPTY


def children(provider: Provider, desc: Descriptor, ref: str) -> list[Descriptor]:
    """What ``desc`` points at, read from the store; see the module rules."""
    media_type = desc.media_type
    if _is_leaf_type(media_type) or not provider.has(desc.digest):
        return []
    if not _is_document_type(media_type):
        if desc.size > MAX_METADATA_BYTES:
            return []
        try:
            return referenced_descriptors(
                media_type, provider.read_blob(desc.digest, MAX_METADATA_BYTES)
            )
        except (NotFound, IntegrityError, LimitExceeded, InvalidFormat):
            return []
    try:
        data = provider.read_blob(desc.digest, MAX_METADATA_BYTES)
        if len(data) != desc.size:
            raise SizeMismatch(f"it is {len(data)} bytes, its descriptor says {desc.size}")
        return referenced_descriptors(media_type, data)
    except NotFound:
        return []  # deleted since has(): same as absent
    except (IntegrityError, LimitExceeded, InvalidFormat) as exc:
        raise type(exc)(
            f"gc stopped: {media_type} {desc.digest} (reached from ref {ref!r}) "
            f"cannot be read: {exc.message}",
            hint=f"delete the ref {ref!r} (or pull the image again), then rerun gc",
        ) from exc


def reachable(provider: Provider, refs: Mapping[str, Descriptor]) -> set[Digest]:
    """Digests of everything reachable from ``refs``, present or not."""
    marked: set[Digest] = set()
    stack: list[tuple[str, Descriptor]] = [(name, refs[name]) for name in sorted(refs)]
    while stack:
        ref, desc = stack.pop()
        if desc.digest in marked:
            continue
        marked.add(desc.digest)
        stack.extend((ref, child) for child in children(provider, desc, ref))
    return marked


def manifests_naming(
    provider: Provider, blobs: Iterable[BlobInfo], configs: Mapping[Digest, str]
) -> dict[str, Descriptor]:
    """Descriptors of the image manifests among ``blobs`` whose config is one of
    ``configs`` (digest -> why it is kept), keyed by that reason and the manifest digest,
    ready to be walked as roots."""
    found: dict[str, Descriptor] = {}
    for info in blobs:
        if info.size > MAX_METADATA_BYTES or info.size < 2:
            continue
        try:
            with provider.open_blob(info.digest) as reader:
                if reader.read(1) not in (b"{", b" ", b"\n", b"\t", b"\r"):
                    continue
            doc = parse_document(provider.read_blob(info.digest, MAX_METADATA_BYTES))
        except (NotFound, IntegrityError, LimitExceeded, InvalidArgument):
            continue  # not a manifest (or not one lamina can read): a leaf
        if isinstance(doc, Manifest) and doc.config.digest in configs:
            why = configs[doc.config.digest]
            found[f"{why} (manifest {info.digest})"] = Descriptor(
                doc.media_type, info.digest, info.size
            )
    return found
