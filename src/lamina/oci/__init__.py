"""The OCI image model: bytes in, values out, no I/O (ARCHITECTURE.md row 1).

- ``digest``, ``descriptor``, ``platform``, ``mediatypes``, ``canonical``: base values.
- ``manifest``: :class:`Manifest`, :class:`Index`, ``parse_document``,
  ``referenced_descriptors`` (what a garbage collector walks).
- ``docker``: Docker schema2 <-> OCI conversion. ``artifact``: the empty descriptor,
  artifact manifests, referrers.
- ``config``: :class:`ImageConfig` and friends (the Dockerfile instructions that change
  a config, ``--change``, live in :mod:`lamina.dockerfile`).
- ``ids``: chain_ids. ``reference``: image references. ``layout``: OCI layout names.
  ``selection``: choosing a manifest for a platform.

``mediatypes`` is used as a module (``from lamina.oci import mediatypes as mt``); the
names below are the rest of the public API. They are imported when first used, not
here, so that importing one submodule loads none of the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.oci.artifact import (
        EMPTY_DESCRIPTOR,
        is_empty_descriptor,
        new_artifact,
        referrer_descriptor,
        referrers_index,
    )
    from lamina.oci.canonical import MAX_DOCUMENT_BYTES, canonical_json, load_json_object
    from lamina.oci.config import ContainerConfig, Healthcheck, History, ImageConfig, RootFS
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.digest import Digest, Digester, new_hasher
    from lamina.oci.docker import to_docker, to_oci
    from lamina.oci.ids import chain_id, chain_ids
    from lamina.oci.manifest import Index, Manifest, parse_document, referenced_descriptors
    from lamina.oci.platform import Platform
    from lamina.oci.reference import Reference
    from lamina.oci.selection import select_manifest

_HOMES = {
    "Digest": "lamina.oci.digest",
    "Digester": "lamina.oci.digest",
    "new_hasher": "lamina.oci.digest",
    "Descriptor": "lamina.oci.descriptor",
    "Platform": "lamina.oci.platform",
    "MAX_DOCUMENT_BYTES": "lamina.oci.canonical",
    "canonical_json": "lamina.oci.canonical",
    "load_json_object": "lamina.oci.canonical",
    "Index": "lamina.oci.manifest",
    "Manifest": "lamina.oci.manifest",
    "parse_document": "lamina.oci.manifest",
    "referenced_descriptors": "lamina.oci.manifest",
    "to_docker": "lamina.oci.docker",
    "to_oci": "lamina.oci.docker",
    "EMPTY_DESCRIPTOR": "lamina.oci.artifact",
    "is_empty_descriptor": "lamina.oci.artifact",
    "new_artifact": "lamina.oci.artifact",
    "referrer_descriptor": "lamina.oci.artifact",
    "referrers_index": "lamina.oci.artifact",
    "ContainerConfig": "lamina.oci.config",
    "Healthcheck": "lamina.oci.config",
    "History": "lamina.oci.config",
    "ImageConfig": "lamina.oci.config",
    "RootFS": "lamina.oci.config",
    "chain_id": "lamina.oci.ids",
    "chain_ids": "lamina.oci.ids",
    "Reference": "lamina.oci.reference",
    "select_manifest": "lamina.oci.selection",
}

__all__ = [
    "EMPTY_DESCRIPTOR",
    "MAX_DOCUMENT_BYTES",
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "Digester",
    "Healthcheck",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "Reference",
    "RootFS",
    "canonical_json",
    "chain_id",
    "chain_ids",
    "is_empty_descriptor",
    "load_json_object",
    "new_artifact",
    "new_hasher",
    "parse_document",
    "referenced_descriptors",
    "referrer_descriptor",
    "referrers_index",
    "select_manifest",
    "to_docker",
    "to_oci",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
