"""The mark phase of garbage collection: every digest reachable from the refs.

Works on any :class:`~lamina.store.api.Provider`; sweeping is the store's own business.
Children come from :func:`lamina.oci.manifest.referenced_descriptors` (config, layers,
manifests and subject). Rules:

- a blob that is absent is skipped (a partial pull, or a ref to content kept elsewhere);
- a blob *typed* as a manifest or index that cannot be read (damaged, oversized, or
  malformed) stops the collection: its children are unknown, and sweeping could delete
  what it names. The error names the ref it was reached from;
- a blob of another non-layer, non-config type is sniffed when small (an artifact
  manifest typed only in its own JSON); if it cannot be read it is a leaf.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.errors import IntegrityError, InvalidFormat, LimitExceeded, NotFound, SizeMismatch
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import referenced_descriptors
from lamina.store.api import MAX_METADATA_BYTES, Provider


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
