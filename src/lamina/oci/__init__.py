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
"""
