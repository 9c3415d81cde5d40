"""`lamina diff`'s A/C/D list from a real overlay upper dir (the seed's walk-through)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.tree import Dir, File, Symlink, build_tree, overlay_mount
from lamina.layers.diff import overlay_changes

pytestmark = pytest.mark.root


def test_seed_walkthrough(tmp_path: Path) -> None:
    low1, low2 = tmp_path / "l1", tmp_path / "l2"
    build_tree(
        low1,
        {
            "in_lower.txt": File(b"lower"),
            "in_both.txt": File(b"old"),
            "etc/conf": File(b"c"),
            "old/dir/x": File(b"x"),
        },
    )
    build_tree(low2, {"newer.txt": File(b"n")})
    upper, work, merged = tmp_path / "up", tmp_path / "work", tmp_path / "m"
    with overlay_mount([low2, low1], upper, work, merged) as m:
        (m / "in_upper.txt").write_bytes(b"new")
        (m / "in_lower.txt").unlink()
        (m / "in_both.txt").write_bytes(b"modified")
        (m / "etc/added").write_bytes(b"a")
        shutil.rmtree(m / "old")
        (m / "newer.txt").unlink()
    changes = overlay_changes(str(upper), [str(low2), str(low1)])
    assert changes == [
        ("C", "/etc"),
        ("A", "/etc/added"),
        ("C", "/in_both.txt"),
        ("D", "/in_lower.txt"),
        ("A", "/in_upper.txt"),
        ("D", "/newer.txt"),
        ("D", "/old"),
    ]
    # the lower layers on disk are unchanged
    assert (low1 / "in_lower.txt").read_bytes() == b"lower"
    assert (low1 / "in_both.txt").read_bytes() == b"old"


def test_opaque_dir_and_symlinked_lower_do_not_leak(tmp_path: Path) -> None:
    low = tmp_path / "low"
    # a lower symlink pointing at the host must never be followed by the lookup
    build_tree(low, {"d/a": File(b"1"), "link": Symlink("/etc")})
    upper, work, merged = tmp_path / "up", tmp_path / "work", tmp_path / "m"
    with overlay_mount([low], upper, work, merged) as m:
        shutil.rmtree(m / "d")
        (m / "d").mkdir()  # recreated: overlay makes it opaque
        (m / "d/b").write_bytes(b"2")
        (m / "link").unlink()
        (m / "link").mkdir()
        (m / "link/passwd").write_bytes(b"mine")  # /etc/passwd exists on the host
    changes = dict((p, k) for k, p in overlay_changes(str(upper), [str(low)]))
    assert changes["/d"] == "C" and changes["/d/b"] == "A"
    assert changes["/link"] == "C"
    assert changes["/link/passwd"] == "A"
    assert os.path.exists("/etc/passwd")


def test_nothing_changed(tmp_path: Path) -> None:
    low = tmp_path / "low"
    build_tree(low, {"a": File(b"1"), "b/": Dir()})
    (tmp_path / "up").mkdir()
    assert overlay_changes(str(tmp_path / "up"), [str(low)]) == []
