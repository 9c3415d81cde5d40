"""Fixtures of the image archive tests; they live in helpers.archives so that test
modules import the helpers from a module with a unique name."""

from helpers.archives import containerd, image, other_store, store, tar_bytes

__all__ = ["containerd", "image", "other_store", "store", "tar_bytes"]
