"""Commands that move images in and out: save, load, unpack, bootstrap."""

from __future__ import annotations

import argparse
import os
import tempfile

from lamina.cli.output import open_store, print_json, progress_bar
from lamina.errors import InvalidArgument
from lamina.image import images as img
from lamina.oci.descriptor import Descriptor
from lamina.oci.reference import Reference


def _save_name(text: str, image: img.Image) -> Reference | None:
    """The name to save under: the one the user typed if it names the image, else the
    image's first name, else None (an unnamed image given by ID)."""
    try:
        if img.normalize(text) in image.names:
            return Reference.parse(text)
    except InvalidArgument:
        pass
    names = [n for n in image.names if not img.is_dangling(n)]
    return Reference.parse(names[0]) if names else None


def cmd_save(args: argparse.Namespace) -> int:
    store = open_store(args)
    chosen = [
        (_save_name(text, image), image)
        for text in args.refs
        for image in [img.resolve(store, text)]
    ]
    if args.format in ("oci", "oci-dir"):
        from lamina.image.archives.oci_layout import export_oci_layout

        with progress_bar(f"saving to {args.output}") as progress:
            export_oci_layout(
                store,
                [(ref, image.descriptor) for ref, image in chosen],
                args.output,
                as_tar=args.format == "oci",
                progress=progress,
            )
        return 0
    from lamina.image.archives.docker_archive import export_docker_archive

    named: list[tuple[Reference, Descriptor]] = []
    for (ref, image), text in zip(chosen, args.refs, strict=True):
        if ref is None:
            raise InvalidArgument(
                f"image {text} has no name, and a docker archive needs one",
                hint=f"tag it first (lamina tag {text} NAME) or save with --format oci",
            )
        named.append((ref, image.descriptor))
    with progress_bar(f"saving to {args.output}") as progress:
        export_docker_archive(
            store, named, args.output, legacy=args.format == "docker-legacy", progress=progress
        )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from lamina.image.archives.docker_archive import load_archive

    store = open_store(args)
    ref_name = img.normalize(args.name) if args.name else None
    with (
        store.lease(),
        progress_bar(f"loading {args.input}", enabled=not (args.quiet or args.json)) as progress,
    ):
        kind, loaded = load_archive(store, args.input, ref_name=ref_name, progress=progress)
        for item in loaded:
            if item.name is None:
                store.set_ref(img.dangling_name(item.descriptor.digest), item.descriptor)
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
    from lamina.image.bootstrap.busybox import make_busybox_rootfs
    from lamina.image.importer import ImportResult, import_rootfs

    store = open_store(args)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    result: ImportResult
    if args.kind == "debian":
        from lamina.image.bootstrap.debian import DebianOptions, bootstrap_debian

        options = DebianOptions(
            suite=args.suite,
            variant=args.variant,
            mirror=args.mirror,
            include=DebianOptions.split_include(args.include),
        )
        with progress_bar(f"debootstrap {options.suite}") as progress:
            result = bootstrap_debian(
                store,
                img.normalize(args.ref),
                options,
                workdir=str(store.root),
                source_date_epoch=int(epoch) if epoch else None,
                on_line=lambda line: progress(0, description=line[:70]),
                progress=progress,
            )
    else:
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
        print_json(
            {"name": result.name, "digest": str(result.manifest.digest), "id": str(result.image_id)}
        )
    else:
        print(str(result.image_id))
    return 0
