"""Image archive formats, in and out of the store (image-spec image-layout.md, docker save).

- ``closure``: :func:`walk_image`, every blob an image reaches from its root descriptor,
  checked present (exporters list what to copy with it, importers what to verify);
- ``tar_io``: the tar side shared by both formats: :class:`LoadedImage` (what every
  loader returns), the deterministic :class:`ArchiveOut`, the hostile-input scan;
- ``oci_layout``: OCI image layout as a directory or a tar (``lamina save --format oci``);
- ``docker_archive``: ``docker save``/``docker load`` tars, OCI and legacy flavours, and
  :func:`load_archive`, which tells the formats apart.

The names below are imported when first used, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.image.archives.closure import ImageClosure, walk_image
    from lamina.image.archives.docker_archive import (
        detect_archive_format,
        export_docker_archive,
        import_docker_archive,
        load_archive,
    )
    from lamina.image.archives.oci_layout import export_oci_layout, image_name, import_oci_layout
    from lamina.image.archives.tar_io import LoadedImage

_HOMES = {
    "ImageClosure": "lamina.image.archives.closure",
    "walk_image": "lamina.image.archives.closure",
    "detect_archive_format": "lamina.image.archives.docker_archive",
    "export_docker_archive": "lamina.image.archives.docker_archive",
    "import_docker_archive": "lamina.image.archives.docker_archive",
    "load_archive": "lamina.image.archives.docker_archive",
    "export_oci_layout": "lamina.image.archives.oci_layout",
    "image_name": "lamina.image.archives.oci_layout",
    "import_oci_layout": "lamina.image.archives.oci_layout",
    "LoadedImage": "lamina.image.archives.tar_io",
}

__all__ = [
    "ImageClosure",
    "LoadedImage",
    "detect_archive_format",
    "export_docker_archive",
    "export_oci_layout",
    "image_name",
    "import_docker_archive",
    "import_oci_layout",
    "load_archive",
    "walk_image",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
