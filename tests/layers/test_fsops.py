"""The fd walk of lamina.layers.fsops: in-root resolution, removal, safe reads.

Every resolution test runs twice: with openat2(RESOLVE_IN_ROOT) and with the manual
O_PATH walk, which must agree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers.tree import Dir, Fifo, File, Symlink, build_tree
from lamina.errors import InvalidFormat, LimitExceeded, NotFound, Unsafe
from lamina.layers import fsops

# build_tree gives files to uid 0 and the applier chowns: root throughout
pytestmark = pytest.mark.root

WALKS = [
    pytest.param(
        True, id="openat2", marks=pytest.mark.skipif(not fsops.HAVE_OPENAT2, reason="no openat2")
    ),
    pytest.param(False, id="manual"),
]


@pytest.fixture(params=WALKS)
def use_openat2(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _where(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/root`` (the target) and ``tmp_path/host`` (must never be reached)."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "secret").write_bytes(b"host secret\n")
    return root, host


def test_plain_parent_is_created(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    with fsops.Root(root, use_openat2=use_openat2) as r:
        fd, leaf = fsops.open_parent(r, "a/b/c/file")
        try:
            assert leaf == "file"
            assert _where(fd) == str(root / "a/b/c")
        finally:
            os.close(fd)
    assert stat.S_IMODE((root / "a/b").stat().st_mode) == 0o755


def test_no_create_raises_not_found(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    with fsops.Root(root, use_openat2=use_openat2) as r, pytest.raises(NotFound):
        r.parent("missing/dir/file", create=False)
    assert not (root / "missing").exists()


@pytest.mark.parametrize("target", ["/", "../../..", "/../..", "../host", "/etc/../.."])
def test_symlinked_parent_stays_in_root(tmp_path: Path, use_openat2: bool, target: str) -> None:
    root, host = _sandbox(tmp_path)
    os.symlink(target, root / "a")
    with fsops.Root(root, use_openat2=use_openat2) as r:
        fd = r.dir_fd("a")
        where = Path(_where(fd))
    # resolved as if chrooted: never above the root, never into the host dir
    assert where == root or root in where.parents
    assert host != where and host not in where.parents


def test_absolute_symlink_restarts_at_root(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    build_tree(root, {"real/etc/": Dir(), "etc": Symlink("/real/etc"), "x": Symlink("etc")})
    with fsops.Root(root, use_openat2=use_openat2) as r:
        fd, leaf = r.parent("x/passwd")
        assert (_where(fd), leaf) == (str(root / "real/etc"), "passwd")


def test_dangling_symlink_parent_is_made_inside(tmp_path: Path, use_openat2: bool) -> None:
    root, host = _sandbox(tmp_path)
    os.symlink(str(host / "newdir"), root / "a")  # absolute: means root/<host path>
    with fsops.Root(root, use_openat2=use_openat2) as r:
        fd = r.dir_fd("a")
        where = Path(_where(fd))
    assert root in where.parents
    assert not (host / "newdir").exists()


def test_symlink_loop_is_unsafe(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with fsops.Root(root, use_openat2=use_openat2) as r, pytest.raises(Unsafe):
        r.dir_fd("a/x")


def test_file_as_parent_is_invalid(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    (root / "f").write_bytes(b"")
    with fsops.Root(root, use_openat2=use_openat2) as r, pytest.raises(InvalidFormat):
        r.parent("f/x")


def test_manual_walk_reports_crossing(tmp_path: Path) -> None:
    root, _ = _sandbox(tmp_path)
    build_tree(root, {"d/": Dir(), "s": Symlink("d")})
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd, crossed = fsops.walk_in_root(rfd, ["d"])
        os.close(fd)
        assert not crossed
        fd, crossed = fsops.walk_in_root(rfd, ["s", "..", "..", "d"])
        assert crossed and _where(fd) == str(root / "d")
        os.close(fd)
    finally:
        os.close(rfd)


def test_cache_invalidation_follows_replacement(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = _sandbox(tmp_path)
    build_tree(root, {"a/b/": Dir(), "other/b/": Dir()})
    with fsops.Root(root, use_openat2=use_openat2) as r:
        assert _where(r.dir_fd("a/b")) == str(root / "a/b")
        pfd, leaf = r.parent("a")
        fsops.remove_at(pfd, leaf)
        r.invalidate("a")
        os.symlink("other", root / "a")
        assert _where(r.dir_fd("a/b")) == str(root / "other/b")


def test_remove_at_never_follows(tmp_path: Path) -> None:
    root, host = _sandbox(tmp_path)
    build_tree(
        root,
        {
            "d/sub/f": File(b"x", mode=0o000),
            "d/sub/": Dir(mode=0o000),
            "d/link": Symlink(str(host)),
            "d/fifo": Fifo(),
        },
    )
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fsops.remove_at(fd, "d")
        fsops.remove_at(fd, "missing")  # no error
    finally:
        os.close(fd)
    assert os.listdir(root) == []
    assert (host / "secret").read_bytes() == b"host secret\n"


def test_safe_read_file(tmp_path: Path, use_openat2: bool) -> None:
    root, host = _sandbox(tmp_path)
    build_tree(
        root,
        {
            "etc/passwd": File(b"root:x:0:0::/root:/bin/sh\n"),
            "etc/group": Symlink("/real/group"),  # followed, inside the root
            "real/group": File(b"root:x:0:\n"),
            "etc/shadow": Symlink(str(host / "secret")),  # means root/<host path>: missing
            "etc/fifo": Fifo(),
            "etc/big": File(b"x" * 5000),
            "etc/dir/": Dir(),
        },
    )
    with fsops.Root(root, use_openat2=use_openat2) as r:
        assert fsops.safe_read_file(r, "etc/passwd", 4096).startswith(b"root:x")
        assert fsops.safe_read_file(r, "/etc/group", 4096) == b"root:x:0:\n"
        with pytest.raises(NotFound):
            fsops.safe_read_file(r, "etc/shadow", 4096)
        with pytest.raises(Unsafe):
            fsops.safe_read_file(r, "etc/fifo", 4096)  # would block forever if opened
        with pytest.raises(Unsafe):
            fsops.safe_read_file(r, "etc/dir", 4096)
        with pytest.raises(LimitExceeded):
            fsops.safe_read_file(r, "etc/big", 4096)
        assert len(fsops.safe_read_file(r, "etc/big", 5000)) == 5000


def test_open_beneath_refuses_symlinks(tmp_path: Path) -> None:
    root, _ = _sandbox(tmp_path)
    build_tree(root, {"d/f": File(b"ok"), "s": Symlink("d"), "d/l": Symlink("f")})
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        f = fsops.open_beneath(fd, "d/f", os.O_RDONLY)
        assert os.read(f, 10) == b"ok"
        os.close(f)
        for path in ("s/f", "d/l"):
            with pytest.raises(OSError):
                os.close(fsops.open_beneath(fd, path, os.O_RDONLY))
    finally:
        os.close(fd)


def test_xattr_helpers_do_not_follow(tmp_path: Path) -> None:
    root, _ = _sandbox(tmp_path)
    build_tree(root, {"f": File(b""), "s": Symlink("f")})
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fsops.set_xattr_at(fd, "f", "user.k", b"v")
        assert fsops.read_xattrs_at(fd, "f") == {"user.k": b"v"}
        assert fsops.read_xattrs_at(fd, "s") == {}  # the link's own (none), not f's
        with pytest.raises(OSError):
            fsops.set_xattr_at(fd, "s", "user.k", b"v")  # user.* on a symlink: EPERM
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", ["..", "a/..", "a/.", ".", "", "a/b\0"])
def test_unclean_leaves_are_refused(tmp_path: Path, path: str) -> None:
    # defence in depth: read_entries never yields these, but a leaf '..' in the root
    # would name the root's parent
    root, _ = _sandbox(tmp_path)
    with fsops.Root(root) as r, pytest.raises(Unsafe):
        r.parent(path)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for name in ("..", ".", "", "a/b"):
            with pytest.raises(Unsafe):
                fsops.remove_at(fd, name)
    finally:
        os.close(fd)
    assert (tmp_path / "host/secret").exists()


@pytest.mark.skipif(not fsops.HAVE_OPENAT2, reason="no openat2")
@pytest.mark.parametrize(("failures", "ok"), [(3, True), (fsops._OPENAT2_EAGAIN_TRIES, False)])
def test_openat2_tries_again_after_eagain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, ok: bool
) -> None:
    # The kernel answers EAGAIN when a rename or mount raced a RESOLVE_IN_ROOT lookup;
    # a few in a row must not fail the lookup, an endless run must still end in an error.
    import ctypes
    import errno

    real = fsops._openat2_fn
    assert real is not None
    left = [failures]

    def flaky(*args: object) -> int:
        if left[0] > 0:
            left[0] -= 1
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return int(real(*args))

    monkeypatch.setattr(fsops, "_openat2_fn", flaky)
    (tmp_path / "d").mkdir()
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        if ok:
            fd = fsops.openat2(root, "d", os.O_PATH | os.O_DIRECTORY, fsops.RESOLVE_IN_ROOT)
            assert _where(fd) == str(tmp_path / "d")
            os.close(fd)
        else:
            with pytest.raises(OSError) as info:
                fsops.openat2(root, "d", os.O_PATH | os.O_DIRECTORY, fsops.RESOLVE_IN_ROOT)
            assert info.value.errno == errno.EAGAIN
    finally:
        os.close(root)
