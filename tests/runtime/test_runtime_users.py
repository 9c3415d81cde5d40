"""USER and WORKDIR resolved inside the image root, never through it to the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import InvalidArgument, LimitExceeded, NotFound, Unsafe
from lamina.runtime.bundle.users import (
    MAX_DB_BYTES,
    ResolvedUser,
    parse_group,
    parse_passwd,
    prepare_workdir,
    resolve_user,
    resolve_user_in,
)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
bad line
broken:x:notanumber:1:::
+nis::::::
web:x:33:33::relative:/bin/sh
"""
GROUP = """\
root:x:0:
app:x:1000:
tty:x:5:app
wheel:x:10:root,app
staff:x:50:other
docker:x:999:app,app
"""


def test_parsers_skip_junk() -> None:
    names = [u.name for u in parse_passwd(PASSWD)]
    assert names == ["root", "daemon", "app", "web"]
    web = parse_passwd(PASSWD)[-1]
    assert web.home == "/"  # a relative home is no home
    assert [g.name for g in parse_group(GROUP)] == [
        "root",
        "app",
        "tty",
        "wheel",
        "staff",
        "docker",
    ]


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("", ResolvedUser(0, 0, (10,), "/root", "root")),
        ("root", ResolvedUser(0, 0, (10,), "/root", "root")),
        ("0", ResolvedUser(0, 0, (10,), "/root", "root")),
        ("app", ResolvedUser(1000, 1000, (5, 10, 999), "/home/app", "app")),
        ("1000", ResolvedUser(1000, 1000, (5, 10, 999), "/home/app", "app")),
        # an explicit group: no supplementary groups
        ("app:staff", ResolvedUser(1000, 50, (), "/home/app", "app")),
        ("app:77", ResolvedUser(1000, 77, (), "/home/app", "app")),
        # numeric ids need no passwd entry
        ("4242", ResolvedUser(4242, 0, (), "/", "")),
        ("4242:4343", ResolvedUser(4242, 4343, (), "/", "")),
        ("4242:wheel", ResolvedUser(4242, 10, (), "/", "")),
        ("daemon", ResolvedUser(1, 1, (), "/usr/sbin", "daemon")),
    ],
)
def test_resolve_user(spec: str, want: ResolvedUser) -> None:
    assert resolve_user_in(spec, PASSWD, GROUP) == want


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("nobody", NotFound, "unable to find user 'nobody'"),
        ("app:nogroup", NotFound, "unable to find group 'nogroup'"),
        ("app:", InvalidArgument, "empty group"),
        ("a:b:c", InvalidArgument, "invalid user"),
        ("99999999999", InvalidArgument, "out of range"),
    ],
)
def test_bad_users(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        resolve_user_in(spec, PASSWD, GROUP)


def test_no_passwd_file() -> None:
    assert resolve_user_in("7:8", None, None) == ResolvedUser(7, 8)
    with pytest.raises(NotFound, match="no /etc/passwd") as info:
        resolve_user_in("app", None, None)
    assert info.value.hint and "numeric" in info.value.hint


def make_root(tmp_path: Path, passwd: str = PASSWD, group: str = GROUP) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(group)
    return root


def test_resolve_user_reads_the_image_files(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert resolve_user(str(root), "app").uid == 1000
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(str(empty), "12:34") == ResolvedUser(12, 34)
    with pytest.raises(NotFound):
        resolve_user(str(empty), "app")


def test_passwd_symlink_resolves_inside_the_root(tmp_path: Path) -> None:
    # /etc/passwd -> /etc/host-passwd: followed chroot-style to the image's own file,
    # never the host's /etc/host-passwd (nor /etc/passwd).
    root = make_root(tmp_path)
    (root / "etc/passwd").unlink()
    (root / "etc/mine").write_text("zed:x:4321:4321::/z:/bin/sh\n")
    os.symlink("/etc/mine", root / "etc/passwd")
    assert resolve_user(str(root), "zed").uid == 4321
    # a link climbing out with .. stays at the root too
    (root / "etc/passwd").unlink()
    os.symlink("../../../../../../etc/mine", root / "etc/passwd")
    assert resolve_user(str(root), "zed").uid == 4321
    # and one to the host's real passwd finds nothing of the host's users
    (root / "etc/passwd").unlink()
    os.symlink("/etc/shadow", root / "etc/passwd")
    with pytest.raises(NotFound):
        resolve_user(str(root), "root")


@pytest.mark.root
def test_hostile_passwd_files_are_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    passwd = root / "etc/passwd"
    passwd.unlink()
    os.mkfifo(passwd)  # would block a naive reader forever (CVE-2024-9676)
    with pytest.raises(Unsafe, match="not a regular file"):
        resolve_user(str(root), "app")
    passwd.unlink()
    os.mknod(passwd, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero: endless
    with pytest.raises(Unsafe, match="not a regular file"):
        resolve_user(str(root), "app")
    passwd.unlink()
    with open(passwd, "wb") as f:
        f.truncate(MAX_DB_BYTES + 1)
    with pytest.raises(LimitExceeded):
        resolve_user(str(root), "app")


# ---------------------------------------------------------------------- WORKDIR


def test_workdir_created(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert prepare_workdir(str(root), "/app/src/") == "/app/src"
    assert (root / "app/src").is_dir()
    assert prepare_workdir(str(root), "/app/src") == "/app/src"  # idempotent
    assert prepare_workdir(str(root), "/") == "/"
    assert prepare_workdir(str(root), "/etc/../srv") == "/srv"


def test_workdir_through_symlinks_stays_inside(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    # an absolute link naming a host directory resolves inside the root
    os.symlink(str(outside), root / "abs")
    assert prepare_workdir(str(root), "/abs/work") == f"{outside}/work"
    assert (root / str(outside).lstrip("/") / "work").is_dir()
    assert not (outside / "work").exists()
    # a link climbing with .. stops at the root
    os.symlink("../../../../../../../..", root / "up")
    assert prepare_workdir(str(root), "/up/tmp/w") == "/tmp/w"
    assert (root / "tmp/w").is_dir()
    # a link to the root itself
    os.symlink("/", root / "top")
    assert prepare_workdir(str(root), "/top") == "/"


def test_workdir_in_kernel_filesystems_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "proc").mkdir()
    # CVE-2024-21626: /proc/self/fd/N would name a directory fd leaked by the runtime
    with pytest.raises(Unsafe, match="kernel filesystem"):
        prepare_workdir(str(root), "/proc/self/fd/7")
    assert not (root / "proc/self").exists()
    # the same through a symlink in the image
    os.symlink("/proc/self/fd/7", root / "wd")
    with pytest.raises(Unsafe):
        prepare_workdir(str(root), "/wd")
    for path in ("/sys/x", "/dev/shm/x", "/dev"):
        with pytest.raises(Unsafe):
            prepare_workdir(str(root), path)


def test_workdir_that_is_a_file(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    with pytest.raises(InvalidArgument, match="not a directory"):
        prepare_workdir(str(root), "/etc/passwd")
    with pytest.raises(InvalidArgument, match="absolute"):
        prepare_workdir(str(root), "rel")
