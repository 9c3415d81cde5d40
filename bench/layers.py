"""Layer commit and apply on a Debian minbase tree, against umoci and tar.

commit: tree -> compressed layer + digest + diff_id
    lamina import (gzip, zstd)  vs  umoci repack  vs  tar --sort=name | gzip -6 | sha256sum
apply:  compressed layer -> tree
    lamina unpack               vs  umoci unpack  vs  tar -xzf
Work directories live on a private tmpfs so ext4 discard noise stays out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import (
    CACHE,
    LAMINA,
    Sample,
    debian_tree,
    fresh,
    interleave,
    report,
    run_timed,
    tmpfs,
)

ROUNDS = int(os.environ.get("LAMINA_BENCH_ROUNDS", "3"))


def main() -> None:
    tree = debian_tree()
    work = tmpfs(CACHE / "work", "8g")
    try:
        _commit(tree, work)
        _apply(tree, work)
    finally:
        subprocess.run(["umount", str(work)], check=False)


def _commit(tree: Path, work: Path) -> None:
    print("layer commit (tree -> compressed layer):", file=sys.stderr)
    # umoci needs a bundle whose rootfs is the tree; made once, outside the timing.
    layout, bundle = work / "umoci-layout", work / "umoci-bundle"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:base"], check=True)
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:base", str(bundle)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(["cp", "-a", f"{tree}/.", str(bundle / "rootfs")], check=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}

    def lamina(compression: str) -> Sample:
        root = fresh(work / "lamina-root")
        return run_timed(
            [
                *LAMINA,
                "--root",
                str(root),
                "import",
                str(tree),
                "-t",
                "bench:x",
                "--compression",
                compression,
            ],
            env=env,
        )

    def umoci() -> Sample:
        return run_timed(["umoci", "repack", "--image", f"{layout}:t", str(bundle)])

    def pipeline() -> Sample:
        return run_timed(f"tar --sort=name -cf - -C {tree} . | gzip -6 | sha256sum", shell=True)

    results = interleave(
        ROUNDS,
        {
            "lamina import (gzip)": lambda: lamina("gzip"),
            "lamina import (zstd)": lambda: lamina("zstd"),
            "umoci repack": umoci,
            "tar|gzip -6|sha256sum": pipeline,
        },
    )
    report(
        "layer-commit",
        results,
        "umoci repack",
        {"tree": str(tree), "command": "make bench (bench/layers.py)"},
    )
    shutil.rmtree(layout)
    shutil.rmtree(bundle)


def _apply(tree: Path, work: Path) -> None:
    print("layer apply (compressed layer -> tree):", file=sys.stderr)
    root = fresh(work / "apply-root")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(
        [*LAMINA, "--root", str(root), "import", str(tree), "-t", "bench:x"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    layout = work / "apply-layout"
    subprocess.run(
        [*LAMINA, "--root", str(root), "save", "bench:x", "-o", str(layout), "--format", "oci-dir"],
        check=True,
    )
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text()
    )
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    dest = work / "dest"

    def clear(_: str) -> None:
        if dest.exists():
            shutil.rmtree(dest)

    results = interleave(
        ROUNDS,
        {
            "lamina unpack": lambda: run_timed(
                [*LAMINA, "--root", str(root), "unpack", "bench:x", str(dest)]
            ),
            "umoci unpack": lambda: run_timed(
                ["umoci", "unpack", "--image", f"{layout}:x", str(dest)]
            ),
            "tar -xzf": lambda: run_timed(
                f"mkdir -p {dest} && tar -xzf {blob} -C {dest}", shell=True
            ),
        },
        before=clear,
    )
    clear("")
    report(
        "layer-apply",
        results,
        "umoci unpack",
        {"tree": str(tree), "command": "make bench (bench/layers.py)"},
    )


if __name__ == "__main__":
    main()
