"""The shared image helpers other suites build on really make what they promise."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from helpers.images import import_busybox, make_random_image, tree_contents
from lamina.image.images import resolve
from lamina.image.unpack import unpack_image
from lamina.store.local import LocalStore


def test_busybox_image_is_quick_and_runs(
    store: LocalStore, busybox_rootfs: Path, tmp_path: Path
) -> None:
    start = time.perf_counter()
    descriptor = import_busybox(store, str(busybox_rootfs))
    elapsed = time.perf_counter() - start
    image = resolve(store, "busybox")
    assert image.descriptor == descriptor
    assert image.config.config.cmd == ("sh",)
    unpack_image(store, image, str(tmp_path / "bb"))
    out = subprocess.run(
        [str(tmp_path / "bb/bin/sh"), "-c", "echo $((6 * 7))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "42\n"
    # generous: the point is "a fixture, not a download"; typically ~0.2 s here
    assert elapsed < 5, elapsed
    # the same rootfs gives the same image (SOURCE_DATE_EPOCH is fixed)
    assert import_busybox(LocalStore(tmp_path / "s2"), str(busybox_rootfs)) == descriptor


def test_random_image_unpacks_to_its_expected_tree(store: LocalStore, tmp_path: Path) -> None:
    for seed in range(5):
        made = make_random_image(store, f"docker.io/test/random:{seed}", seed=seed, layers=4)
        assert len(made.layers) == 4
        dest = tmp_path / f"out{seed}"
        unpack_image(store, resolve(store, f"test/random:{seed}"), str(dest))
        assert tree_contents(str(dest)) == made.expected
    # different seeds, different images
    a = make_random_image(store, "docker.io/test/a:1", seed=1)
    b = make_random_image(store, "docker.io/test/b:1", seed=2)
    assert a.descriptor.digest != b.descriptor.digest
