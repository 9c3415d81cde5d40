"""Image commands: import, images, inspect, history, tag, rmi, prune, builder prune."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from lamina.cli.output import (
    human_size,
    iso,
    open_store,
    print_json,
    print_table,
    progress_bar,
    time_ago,
)
from lamina.image import images as img
from lamina.oci.config import parse_rfc3339
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference


def cmd_import(args: argparse.Namespace) -> int:
    from lamina.image.importer import import_rootfs

    store = open_store(args)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    with progress_bar(f"importing {args.source}", enabled=not args.json) as progress:
        result = import_rootfs(
            store,
            args.source,
            img.normalize(args.ref),
            changes=args.change,
            message=args.message,
            platform=Platform.parse(args.platform) if args.platform else None,
            compression="" if args.compression == "none" else args.compression,
            source_date_epoch=int(epoch) if epoch else None,
            progress=progress,
        )
    if args.json:
        print_json(
            {
                "name": result.name,
                "digest": str(result.manifest.digest),
                "id": str(result.image_id),
                "layer": {
                    "digest": str(result.layer.digest),
                    "diff_id": str(result.diff_id),
                    "size": result.layer.size,
                },
            }
        )
    else:
        print(str(result.image_id))
    return 0


def _image_row(name: str, image: img.Image) -> dict[str, Any]:
    ref = None if img.is_dangling(name) else Reference.parse(name)
    return {
        "name": name if ref else None,
        "repository": ref.familiar_name if ref else "<none>",
        "tag": (ref.tag or "<none>") if ref else "<none>",
        "id": str(image.id),
        "digest": str(image.descriptor.digest),
        "created": iso(parse_rfc3339(image.config.created or "")),
        "size": image.size,
    }


def _warn_unreadable(name: str, exc: Exception) -> None:
    # one unreadable record is named on stderr; the listing goes on without it
    shown = f"<none> ({name.removeprefix(img.DANGLING_PREFIX)})" if img.is_dangling(name) else name
    print(f"warning: cannot list image {shown}: {exc}", file=sys.stderr)


def cmd_images(args: argparse.Namespace) -> int:
    store = open_store(args)
    listed = img.list_images(store, _warn_unreadable)
    if args.quiet:
        seen: set[str] = set()
        for _, image in listed:
            short = image.id.encoded[:12]
            if short not in seen:
                seen.add(short)
                print(short)
        return 0
    rows = [_image_row(name, image) for name, image in listed]
    if args.json:
        print_json(rows)
        return 0
    headers = (
        ["REPOSITORY", "TAG"]
        + (["DIGEST"] if args.digests else [])
        + ["IMAGE ID", "CREATED", "SIZE"]
    )
    table = []
    for (_, image), row in zip(listed, rows, strict=True):
        table.append(
            [row["repository"], row["tag"]]
            + ([row["digest"]] if args.digests else [])
            + [
                image.id.encoded[:12],
                time_ago(parse_rfc3339(image.config.created or "")),
                human_size(image.size),
            ]
        )
    print_table(headers, table)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = []
    for text in args.refs:
        image = img.resolve(store, text)
        if args.raw == "manifest":
            sys.stdout.buffer.write(store.read_blob(image.manifest_descriptor.digest) + b"\n")
            continue
        if args.raw == "config":
            sys.stdout.buffer.write(store.read_blob(image.manifest.config.digest) + b"\n")
            continue
        out.append(
            {
                "Id": str(image.id),
                "Names": list(image.names),
                "Digest": str(image.descriptor.digest),
                "MediaType": image.descriptor.media_type,
                "ManifestDigest": str(image.manifest_descriptor.digest),
                "Created": image.config.created,
                "Architecture": image.config.architecture,
                "Os": image.config.os,
                "Size": image.size,
                "Manifest": json.loads(store.read_blob(image.manifest_descriptor.digest)),
                "Config": json.loads(store.read_blob(image.manifest.config.digest)),
            }
        )
    if not args.raw:
        print_json(out)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = open_store(args)
    image = img.resolve(store, args.ref)
    layers = {
        layer_diff: layer
        for layer_diff, layer in zip(image.config.diff_ids, image.manifest.layers, strict=False)
    }
    rows: list[dict[str, Any]] = []
    # Newest first, like docker history; a layer row shows its layer's size.
    for hist, diff_id in reversed(image.config.layer_history()):
        layer = layers.get(diff_id) if diff_id is not None else None
        rows.append(
            {
                "created": hist.created,
                "created_by": hist.created_by or "",
                "comment": hist.comment or "",
                "empty_layer": hist.empty_layer,
                "diff_id": str(diff_id) if diff_id else None,
                "size": layer.size if layer else 0,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    table = []
    for i, row in enumerate(rows):
        created_by = row["created_by"]
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        ident = image.id.encoded[:12] if i == 0 else "<missing>"
        table.append(
            [
                ident,
                time_ago(parse_rfc3339(row["created"] or "")),
                created_by,
                human_size(row["size"]),
                row["comment"],
            ]
        )
    print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], table)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    img.tag(store, args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from contextlib import suppress

    from lamina.cli.housekeeping import plan_rmi
    from lamina.errors import NotFound

    store = open_store(args)
    # Every REF is checked first: a refused rmi (an image a container uses) untags nothing.
    plan = plan_rmi(store, list(args.refs), force=args.force)
    for step in plan:
        for name in step.names:
            with suppress(NotFound):  # removed meanwhile by another lamina
                store.delete_ref(name)
            if not args.json:
                shown = name if img.is_dangling(name) else Reference.parse(name).familiar()
                print(f"Untagged: {shown}")
    if args.json:
        print_json(
            {
                "untagged": [name for step in plan for name in step.names],
                "images": [step.to_json() for step in plan],
            }
        )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from lamina.cli.housekeeping import prune

    report = prune(open_store(args), dry_run=args.dry_run, build_cache=args.build_cache)
    return _print_prune(args, report)


def cmd_builder(args: argparse.Namespace) -> int:
    from lamina.cli.housekeeping import builder_prune

    report = builder_prune(open_store(args), dry_run=args.dry_run)
    return _print_prune(args, report)


def _print_prune(args: argparse.Namespace, report: Any) -> int:
    if args.json:
        print_json(report.to_json())
        return 0
    verb = "Would reclaim" if report.dry_run else "Total reclaimed space"
    print(
        f"{verb}: {human_size(report.reclaimed_bytes)} ({len(report.blobs)} blobs, "
        f"{len(report.snapshots)} unpacked layers, "
        f"{len(report.cache_records)} build cache records)"
    )
    return 0
