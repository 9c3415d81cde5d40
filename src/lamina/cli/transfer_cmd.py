"""Commands that move images in and out: save, load, unpack, bootstrap."""

from __future__ import annotations

import argparse
import os
import tempfile

from lamina.cli.output import open_store, print_json, progress_bar
from lamina.errors import InvalidArgument
from lamina.image import images as img
from lamina.oci.reference import Reference


def cmd_save(args: argparse.Namespace) -> int:
    store = open_store(args)
    chosen: list[tuple[Reference, img.Image]] = []
    for text in args.refs:
        image = img.resolve(store, text)
        # Save under the name the user gave when it is a name; under the image's own
        # first name when they gave an ID.
        try:
            ref = Reference.parse(text)
            if img.normalize(text) not in image.names:
                raise InvalidArgument("not a name")
        except InvalidArgument:
            if not image.names:
                raise InvalidArgument(f"image {text} has no name to save it under") from None
            ref = Reference.parse(image.names[0])
        chosen.append((ref, image))
    if args.format in ("oci", "oci-dir"):
        from lamina.image.layout import export_oci_layout

        export_oci_layout(
            store,
            [(ref, image.descriptor) for ref, image in chosen],
            args.output,
            as_tar=args.format == "oci",
        )
    else:
        from lamina.image.dockerarchive import export_docker_archive

        export_docker_archive(
            store,
            [(ref, image.descriptor) for ref, image in chosen],
            args.output,
            legacy=args.format == "docker-legacy",
        )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from lamina.image.dockerarchive import load_archive

    store = open_store(args)
    with progress_bar(f"loading {args.input}", enabled=not (args.quiet or args.json)) as progress:
        kind, loaded = load_archive(store, args.input, progress=progress)
    if args.json:
        print_json(
            {
                "format": kind,
                "images": [
                    {"name": item.name, "digest": str(item.descriptor.digest)} for item in loaded
                ],
            }
        )
        return 0
    for item in loaded:
        if item.name:
            print(f"Loaded image: {Reference.parse(item.name).familiar()}")
        else:
            print(f"Loaded image ID: {item.descriptor.digest}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from lamina.image.unpack import unpack_image

    store = open_store(args)
    image = img.resolve(store, args.ref)
    total = sum(layer.size for layer in image.manifest.layers)
    with progress_bar(f"unpacking {args.ref}", total=total, enabled=not args.json) as progress:
        stats = unpack_image(store, image, args.dest, progress=progress)
    if args.json:
        print_json(
            {
                "image": str(image.id),
                "dest": os.path.abspath(args.dest),
                "layers": len(image.manifest.layers),
                "entries": stats.entries,
                "bytes": stats.bytes,
            }
        )
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from lamina.image.bases import make_busybox_rootfs
    from lamina.image.importer import import_rootfs

    store = open_store(args)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=store.root) as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        make_busybox_rootfs(rootfs)
        result = import_rootfs(
            store,
            rootfs,
            img.normalize(args.ref),
            changes=['CMD ["sh"]'],
            message="busybox from the host's busybox-static",
            source_date_epoch=int(epoch) if epoch else None,
        )
    if args.json:
        print_json({"name": result.name, "digest": str(result.manifest.digest),
                    "id": str(result.image_id)})
    else:
        print(str(result.image_id))
    return 0
