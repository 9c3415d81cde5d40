"""Supplementary groups as Docker sets them: the primary group is listed among them.

Docker's daemon (getUser) starts a process's additional gids with its primary gid, then
the groups that list the user; BuildKit and buildah do the same, so ``id`` shows
``groups=GID,...`` and /proc/self/status ``Groups:`` has the primary gid. lamina's
build sandbox and ``lamina run`` share :func:`lamina.runtime.bundle.users.resolve_user`'s
``primary_in_groups`` for this.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_support import Runner

from lamina.runtime.bundle.users import ResolvedUser, resolve_user, resolve_user_in

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:app\nstaff:x:50:\nextra:x:2000:app\n"


@pytest.mark.parametrize(
    ("spec", "gids"),
    [
        ("app", (1000, 10, 2000)),  # primary first, then the groups naming app, once each
        ("1000", (1000, 10, 2000)),
        ("app:staff", (50,)),  # an explicit group: no other groups (libcontainer)
        ("app:77", (77,)),
        ("4242", (0,)),  # a uid without a passwd entry: group 0
        ("4242:4343", (4343,)),
        ("", (0, 10)),
        ("root", (0, 10)),
    ],
)
def test_primary_group_is_listed_first(spec: str, gids: tuple[int, ...]) -> None:
    user = resolve_user_in(spec, PASSWD, GROUP, primary_in_groups=True)
    assert user.additional_gids == gids
    assert user.gid == gids[0]
    plain = resolve_user_in(spec, PASSWD, GROUP)
    assert (plain.uid, plain.gid, plain.home) == (user.uid, user.gid, user.home)
    assert set(plain.additional_gids) <= set(gids)


def test_resolve_user_in_a_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    got = resolve_user(str(tmp_path), "app", primary_in_groups=True)
    assert got == ResolvedUser(1000, 1000, (1000, 10, 2000), "/home/app", "app")
    assert resolve_user(str(tmp_path), "app").additional_gids == (10, 1000, 2000)


def test_build_sandbox_uses_the_shared_rule() -> None:
    """The build sandbox has no groups code of its own any more: it writes its bundle
    with the runtime's one bundle writer, which applies the shared rule."""
    import lamina.builder.sandbox.runner as sandbox
    import lamina.runtime.bundle.writer as writer

    text = Path(sandbox.__file__).read_text()
    shared = Path(writer.__file__).read_text()
    assert "write_bundle(" in text
    assert "primary_in_groups=True" in shared
    assert "additionalGids" not in text and "additionalGids" not in shared


@pytest.mark.root
@pytest.mark.interop
def test_run_lists_the_primary_group(run: Runner, rootfs: Path) -> None:
    with open(rootfs / "etc/passwd", "a") as f:
        f.write("app:x:1000:1001:App:/home/app:/bin/sh\n")
    with open(rootfs / "etc/group", "a") as f:
        f.write("appgrp:x:1001:\nextra:x:2000:app\n")
    ran = run("sh", "-c", "grep ^Groups: /proc/self/status", user="app")
    assert ran.out.split()[1:] == ["1001", "2000"]
