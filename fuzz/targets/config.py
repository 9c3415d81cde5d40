"""Image config parsing (OCI image-spec config.md and Docker's additions)."""

from __future__ import annotations

from lamina.oci.config import ImageConfig


def one_input(data: bytes) -> None:
    config = ImageConfig.parse(data)
    # what lamina writes it must read back the same
    assert ImageConfig.parse(config.to_bytes()) == config
