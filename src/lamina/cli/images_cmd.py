"""Image commands: import, images, inspect, history, tag, rmi, prune."""

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
    store = open_store(args)
    removed: list[str] = []
    for text in args.refs:
        for name in img.untag(store, text, force=args.force):
            removed.append(name)
            if not args.json:
                shown = name if img.is_dangling(name) else Reference.parse(name).familiar()
                print(f"Untagged: {shown}")
    if args.json:
        print_json({"untagged": removed})
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    store = open_store(args)
    snapshots = cache_records = 0
    if not args.dry_run:
        from lamina.builder.cache import BuildCache
        from lamina.builder.sandbox.workbench import Workbench

        # What killed builds left goes first, so the snapshots and blobs it held are
        # free for the sweeps. Build cache records are no gc roots (a prune may take
        # the layers only the cache named); the records of layers gone are dropped.
        Workbench(store).remove_stale()
        snapshots = _prune_snapshots(args, store)
    result = store.gc(dry_run=args.dry_run)
    if not args.dry_run:
        cache = BuildCache(store.root)
        keys = cache.keys()
        cache_records = sum(cache.get(key, store) is None for key in keys)
    if args.json:
        print_json(
            {
                "removed_blobs": result.removed_blobs,
                "removed_bytes": result.removed_bytes,
                "kept_blobs": result.kept_blobs,
                "dry_run": args.dry_run,
                "removed_snapshots": snapshots,
                "removed_build_cache_records": cache_records,
            }
        )
    else:
        verb = "Would reclaim" if args.dry_run else "Total reclaimed space"
        print(
            f"{verb}: {human_size(result.removed_bytes)} ({result.removed_blobs} blobs, "
            f"{snapshots} unpacked layers, {cache_records} build cache records dropped)"
        )
    return 0


def _prune_snapshots(args: argparse.Namespace, store: Any) -> int:
    """Unpacked layers no image needs any more, and leftovers of killed unpacks."""
    from lamina.stateroot import snapshots_dir

    root = snapshots_dir(store.root)
    if not os.path.isdir(root):
        return 0
    from lamina.image.snapshots import prune_snapshots, remove_stale_extractions
    from lamina.snapshot.overlay import OverlaySnapshotter

    snap = OverlaySnapshotter(store.root)
    snap.cleanup()
    remove_stale_extractions(snap)
    return prune_snapshots(store, snap)
