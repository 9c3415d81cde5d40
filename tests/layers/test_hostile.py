"""Hostile layers, one per CVE class of research §4 (shared/research/oci-build-security.md).

Every layer is applied into ``sandbox/target``; beside it sit a planted host file
(``sandbox/host-file``) and a decoy directory (``sandbox/decoy``). Each case must end
in a clear lamina error or a documented safe handling (chroot-style resolution inside
the target), and the sandbox outside the target must be byte-for-byte, mode-for-mode
and mtime-for-mtime what it was: nothing written, chmod-ed, chown-ed, linked or removed
outside the target. The crafted tars are written with Python's tarfile (writing is
safe; it is extraction that lamina never leaves to tarfile).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.tree import Dir, Fifo, File, Symlink, assert_trees_equal, build_tree, snapshot_tree
from lamina.errors import InvalidFormat, LaminaError, LimitExceeded, NotFound, Unsafe
from lamina.layers import fsops
from lamina.layers.api import Limits
from lamina.layers.apply import Mode, apply_layer

# build_tree gives files to uid 0 and the applier chowns: root throughout
pytestmark = pytest.mark.root

Member = tuple[tarfile.TarInfo, bytes]


def reg(name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
    return info, data


def dirm(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def sym(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, b""


def lnk(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, b""


def dev(name: str, major: int = 1, minor: int = 3) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, major, minor, 0o666
    return info, b""


def pax_name(member: Member, name: str) -> Member:
    member[0].pax_headers = {"path": name}
    return member


def tar_of(members: list[Member], **pax: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


@dataclass
class Sandbox:
    root: Path
    target: Path
    host_file: Path
    decoy: Path

    @property
    def abs_host(self) -> str:
        return str(self.host_file)


@dataclass
class Case:
    id: str
    members: Callable[[Sandbox], list[Member]]
    raises: type[LaminaError] | None = None
    lower: Callable[[Sandbox], None] | None = None  # what the target holds before
    check: Callable[[Sandbox], None] | None = None  # after a safe handling
    limits: Limits = field(default_factory=Limits)
    pax: dict[str, str] = field(default_factory=dict)


def _inside(sb: Sandbox, rel: str, data: bytes = b"pwned\n") -> Callable[[Sandbox], None]:
    def check(_: Sandbox) -> None:
        assert (sb.target / rel).read_bytes() == data

    return check


def _lands(rel: str) -> Callable[[Sandbox], None]:
    def check(sb: Sandbox) -> None:
        path = sb.target / rel.lstrip("/")
        assert path.read_bytes() == b"pwned\n", f"{rel} should land inside the target"

    return check


def _link_kept_and_file_written(sb: Sandbox) -> None:
    assert os.readlink(sb.target / "s") == sb.abs_host
    assert (sb.target / "l").read_bytes() == b"over"


def _not_a_symlink(rel: str) -> Callable[[Sandbox], None]:
    def check(sb: Sandbox) -> None:
        assert not (sb.target / rel).is_symlink()

    return check


CASES = [
    # CVE-2007-4559 / CVE-2020-10696 / CVE-2025-4517 class: '..' and absolute names
    Case("dotdot", lambda sb: [reg("../host-file")], Unsafe),
    Case("dotdot-inner", lambda sb: [reg("a/../../decoy/pwned")], Unsafe),
    Case("dotdot-dir", lambda sb: [dirm("../decoy/sub")], Unsafe),
    Case(
        "absolute-name",
        lambda sb: [reg(str(sb.decoy / "pwned"))],
        check=lambda sb: _lands(str(sb.decoy / "pwned"))(sb),
    ),
    # CVE-2014-9356 / CVE-2014-6407: symlinked parents
    Case("symlink-parent-root", lambda sb: [sym("a", "/"), reg("a/pwned")], check=_lands("pwned")),
    Case(
        "symlink-parent-dotdot",
        lambda sb: [sym("a", "../../../.."), reg("a/pwned")],
        check=_lands("pwned"),
    ),
    Case(
        "symlink-parent-absolute-host",
        lambda sb: [sym("a", str(sb.decoy)), reg("a/pwned")],
        check=lambda sb: _lands(str(sb.decoy / "pwned"))(sb),
    ),
    Case(
        "symlink-chain",
        lambda sb: [sym("a", "b/c"), sym("b", "../.."), dirm("c"), reg("a/pwned")],
        check=_lands("c/pwned"),
    ),
    Case("symlink-loop", lambda sb: [sym("a", "b"), sym("b", "a"), reg("a/x")], Unsafe),
    Case(
        "dir-then-symlink-then-child",
        lambda sb: [dirm("d"), sym("d", str(sb.decoy)), reg("d/pwned")],
        check=lambda sb: _lands(str(sb.decoy / "pwned"))(sb),
    ),
    # CVE-2021-29136: the root replaced by a symlink (or a file)
    Case("root-dot-symlink", lambda sb: [sym(".", str(sb.decoy)), reg("pwned")], Unsafe),
    Case("root-slash-symlink", lambda sb: [sym("/", str(sb.decoy)), reg("pwned")], Unsafe),
    Case("root-dot-file", lambda sb: [reg("./")], Unsafe),
    # CVE-2014-6407: hardlinks out of the root
    Case("hardlink-dotdot", lambda sb: [lnk("l", "../host-file")], Unsafe),
    Case("hardlink-absolute", lambda sb: [lnk("l", sb.abs_host)], InvalidFormat),
    Case(
        "hardlink-via-symlink-up",
        lambda sb: [sym("s", "../.."), lnk("l", "s/host-file")],
        InvalidFormat,
    ),
    Case(
        "hardlink-via-absolute-symlink",
        lambda sb: [sym("s", str(sb.root)), lnk("l", "s/host-file")],
        InvalidFormat,
    ),
    Case(
        "hardlink-to-symlink-then-write",
        lambda sb: [sym("s", sb.abs_host), lnk("l", "s"), reg("l", b"over")],
        check=_link_kept_and_file_written,
    ),
    # whiteouts naming '..' or nothing, or reaching out through symlinks
    Case("whiteout-dotdot", lambda sb: [reg(".wh..."), reg("x")], Unsafe),
    Case("whiteout-dotdot-nested", lambda sb: [reg("d/.wh...")], Unsafe),
    Case("whiteout-dot", lambda sb: [reg(".wh..")], Unsafe),
    Case("whiteout-bare", lambda sb: [reg(".wh.")], Unsafe),
    Case(
        "whiteout-through-symlink",
        lambda sb: [
            sym("a", "../"),
            reg("a/.wh.host-file"),
            sym("b", str(sb.root)),
            reg("b/.wh.host-file"),
            reg("b/.wh.decoy"),
        ],
    ),
    Case(
        "opaque-through-symlink",
        lambda sb: [
            sym("a", str(sb.decoy)),
            reg("a/.wh..wh..opq"),
            sym("b", "/.."),
            reg("b/.wh..wh..opq"),
        ],
    ),
    Case(
        "whiteout-of-lower-symlink",
        lambda sb: [reg("lnk/.wh.file"), reg(".wh.lnk")],
        lower=lambda sb: os.symlink(sb.decoy, sb.target / "lnk"),
        check=lambda sb: None if not (sb.target / "lnk").exists() else pytest.fail("kept"),
    ),
    # CVE-2021-32760 / CVE-2021-41089: chmod/chown through a symlink
    Case(
        "chmod-through-symlink-dir",
        lambda sb: [sym("x", sb.abs_host), dirm("x", 0o777)],
        check=_not_a_symlink("x"),
    ),
    Case(
        "chmod-through-symlink-file",
        lambda sb: [sym("x", sb.abs_host), reg("x", b"mine", 0o4777)],
        check=_not_a_symlink("x"),
    ),
    Case(
        "chmod-through-symlink-decoy-dir",
        lambda sb: [sym("x", str(sb.decoy)), dirm("x", 0o777), dirm("x", 0o777)],
        check=_not_a_symlink("x"),
    ),
    # writing through a symlink already in the target (from a lower layer)
    Case(
        "write-through-lower-symlink",
        lambda sb: [reg("etc/passwd", b"image passwd\n")],
        lower=lambda sb: build_tree(sb.target, {"etc/passwd": Symlink(sb.abs_host)}),
        check=lambda sb: _inside(sb, "etc/passwd", b"image passwd\n")(sb),
    ),
    Case(
        "hardlink-over-lower-symlink",
        lambda sb: [reg("f", b"f"), lnk("etc/shadow", "f")],
        lower=lambda sb: build_tree(sb.target, {"etc/shadow": Symlink(sb.abs_host)}),
        check=lambda sb: _inside(sb, "etc/shadow", b"f")(sb),
    ),
    Case(
        "dir-through-lower-symlink",
        lambda sb: [dirm("etc", 0o777), reg("etc/pwned")],
        lower=lambda sb: os.symlink(sb.decoy, sb.target / "etc"),
        check=_lands("etc/pwned"),
    ),
    # device nodes: skipped unless privileged and allowed
    Case(
        "device-not-allowed",
        lambda sb: [dev("dev/sda", 8, 0), dev("null")],
        check=lambda sb: None if not (sb.target / "null").exists() else pytest.fail("made"),
    ),
    # CVE-2022-2879 / CVE-2024-6232 class: oversized and malformed headers
    Case("pax-header-too-big", lambda sb: [reg("f")], LimitExceeded, pax={"x": "y" * (2 << 20)}),
    Case("name-too-long", lambda sb: [reg("a/" * 2100 + "f")], LimitExceeded),
    Case("component-too-long", lambda sb: [reg("x" * 300)], LimitExceeded),
    Case("too-deep", lambda sb: [reg("d/" * 40 + "f")], LimitExceeded, limits=Limits(max_depth=32)),
    Case(
        "too-many-entries",
        lambda sb: [reg(f"f{i}") for i in range(10)],
        LimitExceeded,
        limits=Limits(max_entries=5),
    ),
    Case("nul-in-name", lambda sb: [pax_name(reg("x"), "a\0/../../decoy/pwned")], InvalidFormat),
    Case(
        "layer-too-big",
        lambda sb: [reg("big", b"x" * 100_000)],
        LimitExceeded,
        limits=Limits(max_layer_bytes=50_000),
    ),
]


@pytest.fixture(
    params=[
        pytest.param(
            True,
            id="openat2",
            marks=pytest.mark.skipif(not fsops.HAVE_OPENAT2, reason="no openat2"),
        ),
        pytest.param(False, id="manual"),
    ]
)
def walk(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _sandbox(tmp_path: Path) -> Sandbox:
    root = tmp_path / "sandbox"
    build_tree(
        root,
        {
            "host-file": File(b"host secret\n", mode=0o600, mtime_ns=1_234_000_000_000_000_000),
            "decoy/file": File(b"decoy\n", mode=0o640),
            "target/": Dir(mode=0o700),
        },
    )
    return Sandbox(root, root / "target", root / "host-file", root / "decoy")


def _outside(sb: Sandbox) -> dict[str, object]:
    snap = snapshot_tree(sb.root, mtimes=True)
    return {p: s for p, s in snap.items() if p != "target" and not p.startswith("target/")}


@pytest.mark.parametrize("mode", ["tree", "overlay"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_layer(tmp_path: Path, case: Case, walk: bool, mode: Mode) -> None:
    sb = _sandbox(tmp_path)
    if case.lower is not None:
        case.lower(sb)
    before = _outside(sb)
    host_stat = sb.host_file.stat()
    data = tar_of(case.members(sb), **case.pax)
    kw = {"limits": case.limits, "use_openat2": walk, "mode": mode}
    if case.raises is None:
        apply_layer(io.BytesIO(data), sb.target, **kw)  # type: ignore[arg-type]
        if case.check is not None and mode == "tree":  # overlay: whiteouts are devices
            case.check(sb)
    else:
        with pytest.raises(case.raises) as info:
            apply_layer(io.BytesIO(data), sb.target, **kw)  # type: ignore[arg-type]
        assert str(info.value) and "\n" not in str(info.value)  # one clear line
    assert_trees_equal(_outside(sb), before, mtimes=True)  # type: ignore[arg-type]
    after = sb.host_file.stat()
    assert (after.st_mode, after.st_uid, after.st_mtime_ns, after.st_nlink) == (
        host_stat.st_mode,
        host_stat.st_uid,
        host_stat.st_mtime_ns,
        host_stat.st_nlink,
    )
    assert sb.host_file.read_bytes() == b"host secret\n"


# --------------------------------------------------------------------------- reading /etc files


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "manual"])
def test_passwd_fifo_and_host_symlink(tmp_path: Path, use_openat2: bool) -> None:
    """CVE-2024-9676: /etc/passwd as a FIFO or a symlink to a host file."""
    sb = _sandbox(tmp_path)
    build_tree(
        sb.target,
        {
            "etc/passwd": Fifo(),
            "etc/group": Symlink(sb.abs_host),
            "etc/shadow": Symlink("../../host-file"),
            "etc/subuid": File(b"x" * (1 << 20)),
        },
    )
    with fsops.Root(sb.target, use_openat2=use_openat2) as root:
        with pytest.raises(Unsafe):
            fsops.safe_read_file(root, "/etc/passwd", 1 << 20)  # would block if opened
        for path in ("/etc/group", "/etc/shadow"):  # in-root resolution: not there
            with pytest.raises(NotFound):
                fsops.safe_read_file(root, path, 1 << 20)
        with pytest.raises(LimitExceeded):
            fsops.safe_read_file(root, "/etc/subuid", 4096)
    assert stat.S_ISFIFO((sb.target / "etc/passwd").lstat().st_mode)
