"""Layer and image identities (image-spec config.md "Layer ChainID", "ImageID").

- ``diff_id``: digest of a layer's *uncompressed* tar (listed in the config's rootfs).
- ``chain_id``: identity of a stack of layers, base first::

      ChainID(L0)      = DiffID(L0)
      ChainID(L0..Ln)  = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))

  where both digests are written as text (``sha256:<hex>``). Snapshots are keyed by it.
- image ID: the digest of the config blob.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.errors import InvalidArgument
from lamina.oci.digest import Digest


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """The chain_id of every prefix of ``diff_ids``: ``result[i]`` names layers 0..i."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append(Digest.from_bytes(f"{out[-1]} {diff_id}".encode("ascii")))
    return out


def chain_id(diff_ids: Sequence[Digest]) -> Digest:
    """The chain_id of the whole stack."""
    if not diff_ids:
        raise InvalidArgument("the chain_id of no layers is undefined")
    return chain_ids(diff_ids)[-1]
