"""Conversion between Docker schema2 and OCI manifests and indexes.

Docker image manifest v2 schema 2 and the OCI image manifest have the same shape; they
differ in media types (image-spec media-types.md "Compatibility Matrix"). Converting
changes only the manifest (or index): config and layer blobs keep their bytes and
digests, because a Docker config is a valid OCI config and a Docker gzip layer is a
valid OCI ``tar+gzip`` layer.

An index points at manifests by digest, and converting a manifest changes its digest.
So converting an index takes ``replace``: the caller converts each child manifest,
stores it, and passes ``{old digest: new descriptor}``; entries not in it stay as they
are (their platform and annotations are carried over either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace as _dc_replace
from typing import TypeVar

from lamina.errors import Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"

# Docker layer type -> OCI layer type. Foreign layers are OCI's (deprecated)
# nondistributable layers: both mean "fetch from urls, do not push".
_LAYER_TO_OCI: dict[str, str] = {
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    DOCKER_LAYER: mt.OCI_LAYER,
    mt.DOCKER_LAYER_ZSTD: mt.OCI_LAYER_ZSTD,
    mt.DOCKER_LAYER_FOREIGN_GZIP: mt.OCI_LAYER_NONDIST_GZIP,
    DOCKER_LAYER_FOREIGN: mt.OCI_LAYER_NONDIST,
}

# OCI layer type -> Docker layer type. zstd is left out: Docker schema2 defines no zstd
# type; containerd's "rootfs.diff.tar.zstd" is only used when the caller allows it.
_LAYER_TO_DOCKER: dict[str, str] = {
    mt.OCI_LAYER_GZIP: mt.DOCKER_LAYER_GZIP,
    mt.OCI_LAYER: DOCKER_LAYER,
    mt.OCI_LAYER_NONDIST_GZIP: mt.DOCKER_LAYER_FOREIGN_GZIP,
    mt.OCI_LAYER_NONDIST: DOCKER_LAYER_FOREIGN,
}

_MANIFEST_TO_OCI = {mt.DOCKER_MANIFEST: mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST: mt.OCI_INDEX}

D = TypeVar("D", Manifest, Index)


def _retype(d: Descriptor, media_type: str) -> Descriptor:
    return d if d.media_type == media_type else _dc_replace(d, media_type=media_type)


def _replaced(entry: Descriptor, replace: Mapping[Digest, Descriptor]) -> Descriptor:
    new = replace.get(entry.digest)
    if new is None:
        return entry
    # Keep what the index said about the entry unless the replacement says otherwise.
    return _dc_replace(
        new,
        platform=new.platform if new.platform is not None else entry.platform,
        annotations=new.annotations or entry.annotations,
    )


def to_oci(doc: D, replace: Mapping[Digest, Descriptor] | None = None) -> D:
    """The OCI form of a Docker schema2 manifest or manifest list (OCI input is returned
    with only ``replace`` applied). Unknown layer media types are kept: OCI allows them."""
    if isinstance(doc, Manifest):
        layers = tuple(
            _retype(x, _LAYER_TO_OCI.get(x.media_type, x.media_type)) for x in doc.layers
        )
        config_type = mt.OCI_CONFIG if doc.config.media_type == mt.DOCKER_CONFIG else None
        return Manifest(
            config=_retype(doc.config, config_type or doc.config.media_type),
            layers=layers,
            media_type=mt.OCI_MANIFEST,
            artifact_type=doc.artifact_type,
            subject=doc.subject,
            annotations=doc.annotations,
        )
    entries = tuple(_replaced(e, replace or {}) for e in doc.manifests)
    return Index(
        manifests=entries,
        media_type=mt.OCI_INDEX,
        artifact_type=doc.artifact_type,
        subject=doc.subject,
        annotations=doc.annotations,
    )


def _no_artifact_fields(doc: Manifest | Index, what: str) -> None:
    # Docker schema2 has no artifactType or subject: dropping them would silently turn
    # a signature or SBOM into something else, so refuse.
    if doc.artifact_type:
        raise Unsupported(
            f"{what} has artifactType {doc.artifact_type!r}, which Docker schema2 cannot carry",
            hint="keep artifacts in OCI format",
        )
    if doc.subject is not None:
        raise Unsupported(
            f"{what} has a subject (it is a referrer), which Docker schema2 cannot carry",
            hint="keep referrers in OCI format",
        )


def to_docker(
    doc: D,
    replace: Mapping[Digest, Descriptor] | None = None,
    *,
    allow_zstd: bool = False,
) -> D:
    """The Docker schema2 form of an OCI manifest or index.

    Raises Unsupported for what Docker schema2 cannot express: artifacts (artifactType,
    subject, a config that is not an image config), unknown layer types, zstd layers
    (unless ``allow_zstd``, which writes containerd's non-standard
    ``rootfs.diff.tar.zstd``), nested indexes.
    """
    if isinstance(doc, Manifest):
        _no_artifact_fields(doc, "manifest")
        if doc.config.media_type not in mt.CONFIG_TYPES:
            raise Unsupported(
                f"manifest config has media type {doc.config.media_type!r}, not an image config",
                hint="only container images convert to Docker schema2",
            )
        layers: list[Descriptor] = []
        for layer in doc.layers:
            target = _LAYER_TO_DOCKER.get(layer.media_type)
            if layer.media_type in _LAYER_TO_OCI:
                target = layer.media_type
            elif layer.media_type == mt.OCI_LAYER_ZSTD and allow_zstd:
                target = mt.DOCKER_LAYER_ZSTD
            if target is None:
                hint = "recompress the layer with gzip" if "zstd" in layer.media_type else None
                raise Unsupported(
                    f"layer {layer.digest} has media type {layer.media_type!r}, "
                    "which has no Docker schema2 form",
                    hint=hint,
                )
            layers.append(_retype(layer, target))
        return Manifest(
            config=_retype(doc.config, mt.DOCKER_CONFIG),
            layers=tuple(layers),
            media_type=mt.DOCKER_MANIFEST,
            annotations=doc.annotations,
        )
    _no_artifact_fields(doc, "index")
    entries: list[Descriptor] = []
    for old in doc.manifests:
        entry = _replaced(old, replace or {})
        if entry.media_type in mt.INDEX_TYPES:
            raise Unsupported(
                f"index entry {entry.digest} is itself an index; a Docker manifest list "
                "cannot nest",
                hint="flatten the index first",
            )
        if entry.media_type not in mt.MANIFEST_TYPES:
            raise Unsupported(
                f"index entry {entry.digest} has media type {entry.media_type!r}; a Docker "
                "manifest list holds only image manifests"
            )
        entries.append(entry)
    return Index(
        manifests=tuple(entries), media_type=mt.DOCKER_MANIFEST_LIST, annotations=doc.annotations
    )


def oci_media_type(media_type: str) -> str:
    """The OCI twin of a Docker media type (others unchanged)."""
    if media_type == mt.DOCKER_CONFIG:
        return mt.OCI_CONFIG
    return _MANIFEST_TO_OCI.get(media_type) or _LAYER_TO_OCI.get(media_type, media_type)
