"""Image manifests and indexes (image-spec manifest.md, image-index.md) and Docker schema2.

This module parses and writes the two document kinds that point at other content:

- an image *manifest* (OCI or Docker schema2) names a ``config`` and ``layers``;
- an image *index* (OCI, or a Docker manifest list) names other ``manifests``.

Both may name a ``subject`` (the referrers API, image-spec manifest.md "subject").
"""

from __future__ import annotations

from typing import Any

from lamina.errors import InvalidFormat
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES, load_json_object
from lamina.oci.descriptor import Descriptor


def _sniff_kind(obj: dict[str, Any]) -> str:
    """Which document an object is: "manifest", "index" or "" (neither).

    The JSON ``mediaType`` wins when it is a known manifest or index type; otherwise the
    shape decides (image-spec image-index.md: mediaType is only SHOULD).
    """
    declared = obj.get("mediaType")
    if declared in mt.MANIFEST_TYPES:
        return "manifest"
    if declared in mt.INDEX_TYPES:
        return "index"
    if isinstance(obj.get("manifests"), list):
        return "index"
    if isinstance(obj.get("config"), dict) or isinstance(obj.get("layers"), list):
        return "manifest"
    return ""


def _descriptor_list(obj: dict[str, Any], key: str, what: str) -> list[Descriptor]:
    items = obj.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidFormat(f"{what} field {key!r} must be a JSON array")
    return [Descriptor.from_json(item, f"{what} {key}[{i}]") for i, item in enumerate(items)]


def referenced_descriptors(media_type: str, data: bytes) -> list[Descriptor]:
    """The descriptors a blob points at: what a garbage collector must keep alive.

    For an image manifest (OCI or Docker schema2): config, layers, then subject. For an
    index or a Docker manifest list: manifests, then subject. For anything else (configs,
    layers, unknown blobs) ``[]``. When ``media_type`` is not a manifest or index type
    (for example empty, or ``application/octet-stream``) a small JSON object is sniffed
    by its own ``mediaType`` or shape, so documents typed only inside their JSON count.

    Raises InvalidFormat if a blob typed as a manifest or index is malformed, so a
    collector stops instead of sweeping the children of a document it cannot read.
    """
    declared = media_type in mt.MANIFEST_TYPES or media_type in mt.INDEX_TYPES
    if not declared:
        # Layers and configs never point at anything; skip parsing them.
        if mt.is_layer(media_type) or media_type in mt.CONFIG_TYPES or media_type == mt.OCI_EMPTY:
            return []
        if len(data) > MAX_DOCUMENT_BYTES or data.lstrip()[:1] != b"{":
            return []
        try:
            obj = load_json_object(data, "blob")
        except InvalidFormat:
            return []
        kind = _sniff_kind(obj)
    else:
        obj = load_json_object(data, media_type)
        kind = "manifest" if media_type in mt.MANIFEST_TYPES else "index"
    if not kind:
        return []
    # Collect every descriptor field present, whatever the kind: a confused document
    # (a manifest with ``manifests``, GHSA-77vh-xpmg-72qh) keeps all it names alive.
    what = kind
    out: list[Descriptor] = []
    config = obj.get("config")
    if config is not None:
        out.append(Descriptor.from_json(config, f"{what} config"))
    out.extend(_descriptor_list(obj, "layers", what))
    out.extend(_descriptor_list(obj, "manifests", what))
    subject = obj.get("subject")
    if subject is not None:
        out.append(Descriptor.from_json(subject, f"{what} subject"))
    return out
