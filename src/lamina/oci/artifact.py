"""Artifacts and referrers (image-spec manifest.md "Guidelines for Artifact Usage",
distribution-spec "Listing Referrers").

An artifact is an image manifest whose ``artifactType`` (or config media type) says what
it holds; a *referrer* is a manifest or index whose ``subject`` points at another one
(a signature, an SBOM, an attestation about an image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from lamina.errors import InvalidArgument
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest

# manifest.md "Guidance for an Empty Descriptor": the two bytes ``{}``.
EMPTY_JSON = b"{}"
EMPTY_DIGEST = Digest("sha256", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
EMPTY_DESCRIPTOR = Descriptor(mt.OCI_EMPTY, EMPTY_DIGEST, 2, data=EMPTY_JSON)


def is_empty_descriptor(d: Descriptor) -> bool:
    """True for the empty descriptor, with or without its embedded ``data``."""
    return d.media_type == mt.OCI_EMPTY and d.digest == EMPTY_DIGEST and d.size == 2


def artifact_type_of(doc: Manifest | Index) -> str | None:
    """The artifact type a referrers listing shows for ``doc``.

    distribution-spec "Listing Referrers": the manifest's ``artifactType`` if set, else
    its ``config.mediaType``; an index has only its own ``artifactType`` (else None).
    """
    if doc.artifact_type:
        return doc.artifact_type
    if isinstance(doc, Manifest):
        return doc.config.media_type
    return None


def new_artifact(
    artifact_type: str,
    layers: Sequence[Descriptor] = (),
    *,
    config: Descriptor | None = None,
    subject: Descriptor | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    """An OCI artifact manifest following the spec's guidance.

    With no layers, one empty descriptor stands in (layers SHOULD have one item); with
    no config, the empty descriptor is the config (then ``artifactType`` MUST be set).
    """
    if not artifact_type:
        raise InvalidArgument(
            "an artifact needs an artifactType", hint="e.g. application/vnd.example.sbom+json"
        )
    return Manifest(
        config=config or EMPTY_DESCRIPTOR,
        layers=tuple(layers) or (EMPTY_DESCRIPTOR,),
        media_type=mt.OCI_MANIFEST,
        artifact_type=artifact_type,
        subject=subject,
        annotations=annotations or {},
    )


def referrer_descriptor(descriptor: Descriptor, doc: Manifest | Index) -> Descriptor:
    """The entry for ``doc`` (stored as ``descriptor``) in a referrers index: its
    ``artifactType`` and ``annotations`` copied from the document (distribution-spec
    "Listing Referrers"), no platform, no embedded data."""
    return replace(
        descriptor,
        artifact_type=artifact_type_of(doc),
        annotations=doc.annotations,
        data=None,
        platform=None,
    )


def referrers_index(entries: Sequence[Descriptor], artifact_type: str | None = None) -> Index:
    """The index a referrers listing answers with, optionally filtered by artifact type."""
    if artifact_type:
        entries = [e for e in entries if e.artifact_type == artifact_type]
    return Index(manifests=tuple(entries), media_type=mt.OCI_INDEX)
