"""Images in the store: named, made, unpacked, moved in and out (row 3).

An image is a manifest (or an index of them) in a :mod:`lamina.store`, named by a ref;
this package is everything that reads or makes one. By concern::

    lamina/image/
    ├── api.py          Fetcher and Pusher (the transports' roles), RemoteManifest,
    │                   TransferProgress (no I/O)
    ├── images.py       names: resolve a ref, digest or ID prefix to an Image; list,
    │                   tag, untag
    ├── layer_io.py     layers between the store and the filesystem: write_layer,
    │                   open_layer (one pass, never staged)
    ├── importer.py     ``lamina import``: a root filesystem becomes a one-layer image
    │                   (build_image is shared by commit and bootstrap)
    ├── commit.py       ``lamina commit``: a container's upper dir becomes a new layer
    ├── unpack.py       ``lamina unpack``: an image's layers into a plain directory
    ├── snapshots.py    an image's layers into committed overlay snapshots, one per
    │                   ChainID, shared by every image and container above them
    ├── archives/       image archive formats, in and out of the store
    │   ├── closure.py       every blob an image reaches (what to copy, what to check)
    │   ├── tar_io.py        the tar side: deterministic ArchiveOut, hostile-input scan
    │   ├── oci_layout.py    OCI image layout (image-layout.md), directory or tar
    │   └── docker_archive.py  ``docker save``/``docker load`` tars, both flavours
    ├── bootstrap/      base images from the host, for a machine with no registry
    │   ├── busybox.py       ``lamina bootstrap busybox``: busybox-static and its applets
    │   └── debian.py        ``lamina bootstrap debian``: debootstrap from the apt mirror
    └── transfer/       pull and push whole images over any Fetcher/Pusher

Rows inside the package (import-linter keeps them): ``api``, ``images`` and
``layer_io`` at the bottom; ``importer``; ``archives``, ``bootstrap``, ``transfer``,
``commit``, ``unpack`` and ``snapshots`` on top, none of which imports another.

The names below are the public API. They are imported when first used, not here, so
that ``from lamina.image import images`` loads neither the archive formats nor the
transfer code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.exports import lazy_exports

if TYPE_CHECKING:
    from lamina.image.api import Fetcher, NoProgress, Pusher, RemoteManifest, TransferProgress
    from lamina.image.archives import (
        LoadedImage,
        export_docker_archive,
        export_oci_layout,
        import_docker_archive,
        import_oci_layout,
        load_archive,
        walk_image,
    )
    from lamina.image.bootstrap import DebianOptions, bootstrap_debian, make_busybox_rootfs
    from lamina.image.commit import CommitResult, commit_upper
    from lamina.image.images import Image, list_images, load_image, resolve, tag, untag
    from lamina.image.importer import ImportResult, build_image, import_rootfs
    from lamina.image.layer_io import LayerWritten, open_layer, write_layer
    from lamina.image.snapshots import prune_snapshots, unpack_to_snapshots
    from lamina.image.unpack import unpack_image

_HOMES = {
    "Fetcher": "lamina.image.api",
    "NoProgress": "lamina.image.api",
    "Pusher": "lamina.image.api",
    "RemoteManifest": "lamina.image.api",
    "TransferProgress": "lamina.image.api",
    "LoadedImage": "lamina.image.archives",
    "export_docker_archive": "lamina.image.archives",
    "export_oci_layout": "lamina.image.archives",
    "import_docker_archive": "lamina.image.archives",
    "import_oci_layout": "lamina.image.archives",
    "load_archive": "lamina.image.archives",
    "walk_image": "lamina.image.archives",
    "DebianOptions": "lamina.image.bootstrap",
    "bootstrap_debian": "lamina.image.bootstrap",
    "make_busybox_rootfs": "lamina.image.bootstrap",
    "CommitResult": "lamina.image.commit",
    "commit_upper": "lamina.image.commit",
    "Image": "lamina.image.images",
    "list_images": "lamina.image.images",
    "load_image": "lamina.image.images",
    "resolve": "lamina.image.images",
    "tag": "lamina.image.images",
    "untag": "lamina.image.images",
    "ImportResult": "lamina.image.importer",
    "build_image": "lamina.image.importer",
    "import_rootfs": "lamina.image.importer",
    "LayerWritten": "lamina.image.layer_io",
    "open_layer": "lamina.image.layer_io",
    "write_layer": "lamina.image.layer_io",
    "prune_snapshots": "lamina.image.snapshots",
    "unpack_to_snapshots": "lamina.image.snapshots",
    "unpack_image": "lamina.image.unpack",
}

__all__ = [
    "CommitResult",
    "DebianOptions",
    "Fetcher",
    "Image",
    "ImportResult",
    "LayerWritten",
    "LoadedImage",
    "NoProgress",
    "Pusher",
    "RemoteManifest",
    "TransferProgress",
    "bootstrap_debian",
    "build_image",
    "commit_upper",
    "export_docker_archive",
    "export_oci_layout",
    "import_docker_archive",
    "import_oci_layout",
    "import_rootfs",
    "list_images",
    "load_archive",
    "load_image",
    "make_busybox_rootfs",
    "open_layer",
    "prune_snapshots",
    "resolve",
    "tag",
    "unpack_image",
    "unpack_to_snapshots",
    "untag",
    "walk_image",
    "write_layer",
]


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
