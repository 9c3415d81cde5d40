"""Both lazy mount designs serve a generated tree exactly, fill on demand, cache fills,
turn a failing fill into EIO and recover once the source does."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.lazy.mount import daemon
from lamina.lazy.mount.api import MountHandle, SourceSpec

pytestmark = pytest.mark.root

DESIGNS = ["fuse", "erofs"]
MiB = 1 << 20


def make_tree(root: Path) -> None:
    """Every inode type the contract carries, with owners, set-id bits and xattrs."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    big = root / "usr/bin/big"
    big.write_bytes(os.urandom(3 * MiB + 12345))
    os.chmod(big, 0o4755)
    os.link(big, root / "usr/bin/big-hardlink")
    (root / "etc/passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n" * 40)
    os.chown(root / "etc/passwd", 1234, 5678)
    os.chmod(root / "etc/passwd", 0o640)
    (root / "etc/empty").write_bytes(b"")
    (root / "etc/tiny").write_bytes(b"ab")  # shorter than the EROFS skeleton's marker
    (root / "etc/exact").write_bytes(b"0123456789abcdef" * 65536)  # exactly 1 MiB
    os.setxattr(root / "etc/passwd", "user.lamina", b"value")
    # cap_net_bind_service=ep in the VFS v2 format
    cap = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
    os.setxattr(root / "usr/bin/big", "security.capability", cap)
    os.setxattr(root / "etc", "trusted.overlay.opaque", b"y")
    os.symlink("../usr/bin/big", root / "etc/link")
    os.symlink("/nowhere/at/all", root / "etc/dangling")
    os.mknod(root / "etc/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "etc/blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mkfifo(root / "etc/fifo", 0o620)
    os.chmod(root / "usr", 0o1777)
    for p in root.rglob("*"):
        os.utime(
            p, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789), follow_symlinks=False
        )


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """What must match: type+mode, owner, size, mtime, rdev, link target, xattrs, data."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        target = os.readlink(p) if p.is_symlink() else ""
        xattrs = {
            n: os.getxattr(p, n, follow_symlinks=False)
            for n in os.listxattr(p, follow_symlinks=False)
        }
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
        out[str(p.relative_to(root))] = (
            st.st_mode, st.st_uid, st.st_gid, size, st.st_mtime_ns, st.st_rdev, target,
            sorted(xattrs.items()), digest,
        )  # fmt: skip
    return out


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    return src


def _mount(design: str, tmp_path: Path, src: Path, **knobs: object) -> MountHandle:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    arg = json.dumps({"root": str(src), "log": str(tmp_path / "fills.log"), **knobs})
    spec = SourceSpec("lamina.lazy.mount.localdir:from_json", arg)
    return daemon.start(design, spec, str(mnt), str(tmp_path / "state" / design))


@pytest.fixture(params=DESIGNS)
def mounted(
    request: pytest.FixtureRequest, tmp_path: Path, source_dir: Path
) -> Iterator[tuple[MountHandle, Path]]:
    handle = _mount(request.param, tmp_path, source_dir, fail_flag=str(tmp_path / "fail"))
    try:
        yield handle, tmp_path
    finally:
        daemon.stop(handle)
        assert not daemon.is_mounted(handle.mountpoint)


def fills(tmp_path: Path) -> int:
    log = tmp_path / "fills.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_tree_matches_the_source(mounted: tuple[MountHandle, Path], source_dir: Path) -> None:
    handle, _ = mounted
    mnt = Path(handle.mountpoint)
    assert snapshot(mnt) == snapshot(source_dir)
    # A hardlink group is one inode: same st_ino, st_nlink 2.
    a, b = (mnt / "usr/bin/big").lstat(), (mnt / "usr/bin/big-hardlink").lstat()
    assert a.st_ino == b.st_ino
    assert a.st_nlink == b.st_nlink == 2
    assert (mnt / "etc/passwd").lstat().st_nlink == 1


def test_data_is_filled_on_demand_once(mounted: tuple[MountHandle, Path], source_dir: Path) -> None:
    handle, tmp_path = mounted
    big = Path(handle.mountpoint) / "usr/bin/big"
    before = fills(tmp_path)
    with open(big, "rb") as f:
        f.seek(2 * MiB)
        assert f.read(100) == (source_dir / "usr/bin/big").read_bytes()[2 * MiB : 2 * MiB + 100]
    after_one = fills(tmp_path)
    assert after_one - before == 1  # one 1 MiB block, not the whole file
    data = big.read_bytes()
    assert (
        hashlib.sha256(data).digest()
        == hashlib.sha256((source_dir / "usr/bin/big").read_bytes()).digest()
    )
    filled = fills(tmp_path)
    assert filled - before == 4
    # Drop the page cache of the file: the next read reaches the mechanism, which must
    # answer from what it cached, without calling fill again.
    fd = os.open(big, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert big.read_bytes() == data
    assert fills(tmp_path) == filled


def test_failing_fill_is_eio_then_recovers(
    mounted: tuple[MountHandle, Path], source_dir: Path
) -> None:
    handle, tmp_path = mounted
    passwd = Path(handle.mountpoint) / "etc/passwd"
    (tmp_path / "fail").touch()
    with pytest.raises(OSError) as info:
        passwd.read_bytes()
    assert info.value.errno == errno.EIO
    (tmp_path / "fail").unlink()
    assert passwd.read_bytes() == (source_dir / "etc/passwd").read_bytes()
