"""Manifest and index parsing (OCI and Docker), sniffing and the GC's descriptor walk.

The first line may name a media type; the rest is the document.
"""

from __future__ import annotations

from fuzz.harness import tolerant
from lamina.oci.docker import to_docker, to_oci
from lamina.oci.manifest import Manifest, parse_document, referenced_descriptors
from lamina.registry.protocol import check_manifest_put


def one_input(data: bytes) -> None:
    media_type: str | None = None
    if data[:1] != b"{":
        first, _, data = data.partition(b"\n")
        media_type = first.decode("utf-8", "replace") or None
    tolerant(referenced_descriptors, media_type or "", data)
    tolerant(check_manifest_put, media_type, data, "latest")
    doc = parse_document(data, media_type)
    if isinstance(doc, Manifest):  # to_oci takes one kind or the other: narrow for mypy
        to_oci(doc)
    else:
        to_oci(doc)
    tolerant(to_docker, doc)
