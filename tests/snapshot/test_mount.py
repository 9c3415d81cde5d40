"""lamina.snapshot.mount against the real kernel: binds, read-only remounts, overlay
errors with the kernel's words, long paths, rollback, busy and lazy unmounts."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.errors import Conflict, InvalidArgument, NotFound
from lamina.snapshot.api import Mount
from lamina.snapshot.mount import is_mounted, mount_all, unmount, unmount_all
from lamina.snapshot.mountinfo import mountinfo

pytestmark = pytest.mark.root


def _dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        path = tmp_path / name
        path.mkdir(parents=True)
        out.append(path)
    return out


def test_bind_rw_and_ro(tmp_path: Path) -> None:
    src, rw, ro = _dirs(tmp_path, "src", "rw", "ro")
    (src / "f").write_bytes(b"1")
    mount_all([Mount("bind", str(src), ("rbind", "rw"))], str(rw))
    try:
        mount_all([Mount("bind", str(src), ("rbind", "ro", "nosuid", "nodev"))], str(ro))
        try:
            (rw / "g").write_bytes(b"2")
            assert (ro / "g").read_bytes() == b"2"
            with pytest.raises(OSError) as exc:
                (ro / "h").write_bytes(b"3")
            assert exc.value.errno == errno.EROFS
            (info,) = [m for m in mountinfo() if m.mount_point == str(ro)]
            assert {"ro", "nosuid", "nodev"} <= set(info.options.split(","))
        finally:
            unmount(str(ro))
    finally:
        unmount(str(rw))
    assert not is_mounted(str(rw)) and not is_mounted(str(ro))


def test_rbind_ro_is_recursive(tmp_path: Path) -> None:
    """A read-only rbind must not leave a writable submount inside (mount_setattr)."""
    src, sub, target = _dirs(tmp_path, "src", "sub", "target")
    (src / "inner").mkdir()
    mount_all([Mount("bind", str(sub), ("bind",))], str(src / "inner"))
    try:
        mount_all([Mount("bind", str(src), ("rbind", "ro"))], str(target))
        try:
            with pytest.raises(OSError) as exc:
                (target / "inner" / "x").write_bytes(b"x")
            assert exc.value.errno == errno.EROFS
        finally:
            assert unmount_all(str(target)) == 2  # the submount came along with rbind
    finally:
        unmount(str(src / "inner"))


def test_overlay_errors_carry_the_kernels_words(tmp_path: Path) -> None:
    lower, upper, work, a = _dirs(tmp_path, "lower", "upper", "work", "a")

    def ov(up: Path, wk: Path, low: str = str(lower)) -> list[Mount]:
        return [
            Mount(
                "overlay",
                "overlay",
                (f"lowerdir={low}", f"upperdir={up}", f"workdir={wk}", "index=off"),
            )
        ]

    missing = str(tmp_path / "missing")
    with pytest.raises(NotFound, match=f"{missing} is not a directory"):
        mount_all(ov(upper, work, missing), str(a))
    # a bad option value: the fs context log carries the kernel's words
    with pytest.raises(InvalidArgument, match="Bad value for 'redirect_dir'"):
        mount_all(
            [Mount("overlay", "overlay", (*ov(upper, work)[0].options, "redirect_dir=x"))], str(a)
        )
    assert not is_mounted(str(a))
    with pytest.raises(InvalidArgument, match="no lowerdir"):
        mount_all([Mount("overlay", "overlay", ("upperdir=/x",))], str(a))
    with pytest.raises(InvalidArgument):
        mount_all([Mount("bind", str(lower), ("rbind", "bogus"))], str(a))


def test_long_layer_paths(tmp_path: Path) -> None:
    """A layer path over fsconfig's 255-byte value limit still mounts."""
    deep = tmp_path
    while len(str(deep)) < 300:
        deep = deep / ("d" * 40)
    lower, upper, work, target = _dirs(deep, "lower", "upper", "work", "target")
    lower2 = _dirs(tmp_path, "lower2")[0]
    (lower / "f").write_bytes(b"deep")
    (lower2 / "g").write_bytes(b"shallow")
    opts = (
        f"lowerdir={lower}:{lower2}",
        f"upperdir={upper}",
        f"workdir={work}",
        "index=off",
    )
    mount_all([Mount("overlay", "overlay", opts)], str(target))
    try:
        assert (target / "f").read_bytes() == b"deep"
        assert (target / "g").read_bytes() == b"shallow"
    finally:
        unmount(str(target))


def test_mount_all_rolls_back_on_failure(tmp_path: Path) -> None:
    src, target = _dirs(tmp_path, "src", "target")
    mounts = [
        Mount("bind", str(src), ("rbind", "rw")),
        Mount("bind", str(tmp_path / "missing"), ("rbind", "rw")),
    ]
    with pytest.raises(NotFound):
        mount_all(mounts, str(target))
    assert not is_mounted(str(target))


def test_unmount_errors_and_stacks(tmp_path: Path) -> None:
    a, b, target = _dirs(tmp_path, "a", "b", "target")
    with pytest.raises(NotFound, match="nothing is mounted"):
        unmount(str(target))
    assert unmount_all(str(target)) == 0
    assert unmount_all(str(tmp_path / "missing")) == 0
    (a / "which").write_bytes(b"a")
    (b / "which").write_bytes(b"b")
    mount_all([Mount("bind", str(a), ("bind",)), Mount("bind", str(b), ("bind",))], str(target))
    assert (target / "which").read_bytes() == b"b"  # stacked: the last one is on top
    assert unmount_all(str(target)) == 2
    assert not is_mounted(str(target))


def test_busy_mount_and_lazy_fallback(tmp_path: Path) -> None:
    src, target = _dirs(tmp_path, "src", "target")
    mount_all([Mount("bind", str(src), ("bind",))], str(target))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        cwd=str(target),
        stdin=subprocess.PIPE,
    )
    try:
        with pytest.raises(Conflict, match="busy"):
            unmount(str(target), lazy_fallback=False)
        assert is_mounted(str(target))
        unmount(str(target))  # detached lazily
        assert not is_mounted(str(target))
    finally:
        holder.communicate(b"", timeout=10)


def test_mountinfo_unescapes_paths(tmp_path: Path) -> None:
    src, target = _dirs(tmp_path, "src", "with space\tand tab")
    mount_all([Mount("bind", str(src), ("bind",))], str(target))
    try:
        assert is_mounted(str(target))
        assert str(target) in {m.mount_point for m in mountinfo()}
    finally:
        unmount(str(target))


def test_mount_values_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        Mount("bind", "/a\0b")
    with pytest.raises(InvalidArgument):
        Mount("", "/a")
    m = Mount("overlay", "overlay", ("lowerdir=/a:/b", "ro"))
    assert m.readonly and m.option("lowerdir") == "/a:/b" and m.option("upperdir") is None


def test_unprivileged_mount_is_a_clear_error(tmp_path: Path) -> None:
    src, target = _dirs(tmp_path, "src", "target")
    os.chmod(tmp_path, 0o755)
    script = (
        "import os, sys\n"
        "from lamina.errors import Unsupported\n"
        "from lamina.snapshot.api import Mount\n"
        "from lamina.snapshot.mount import mount_all\n"
        "os.setgid(65534); os.setuid(65534)  # after the imports: ~root is not readable\n"
        "try:\n"
        "    mount_all([Mount('bind', sys.argv[1], ('bind',))], sys.argv[2])\n"
        "except Unsupported as e:\n"
        "    print('unsupported', e.hint)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(src), str(target)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.startswith("unsupported") and "root" in out.stdout
