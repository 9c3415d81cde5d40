"""Base root filesystems made from the host, for a machine that reaches no image registry.

``busybox``: Debian's busybox-static (one static binary) plus a symlink per applet and a
minimal ``/etc``. It takes well under a second and gives a shell, coreutils and a libc-free
userland that runs anywhere the kernel does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from lamina.errors import NotFound, ToolError

BUSYBOX_PATHS = ("/usr/bin/busybox", "/bin/busybox")

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
_GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n"


def find_busybox() -> str:
    for path in BUSYBOX_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NotFound(
        "busybox is not installed on this host",
        hint="install Debian's busybox-static: apt-get install busybox-static",
    )


def _applets(busybox: str) -> list[str]:
    try:
        out = subprocess.run(
            [busybox, "--list-full"], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"{busybox} --list-full failed: {exc}") from exc
    return [line.strip() for line in out.splitlines() if line.strip()]


def make_busybox_rootfs(dest: str) -> None:
    """Fill the empty (or missing) directory ``dest`` with a busybox root filesystem."""
    busybox = find_busybox()
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise ToolError(f"{dest} is not empty")
    for d, mode in (
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("home", 0o755),
    ):
        path = os.path.join(dest, d)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    target = os.path.join(dest, "bin/busybox")
    shutil.copyfile(busybox, target)
    os.chmod(target, 0o755)
    for applet in _applets(busybox):
        rel = applet.lstrip("/")
        if rel == "bin/busybox" or "/" not in rel:
            continue
        link = os.path.join(dest, rel)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        # Relative links keep the tree valid wherever it is unpacked.
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
    for name, text, mode in (
        ("etc/passwd", _PASSWD, 0o644),
        ("etc/group", _GROUP, 0o644),
        ("etc/hostname", "lamina\n", 0o644),
        ("etc/hosts", "127.0.0.1\tlocalhost\n", 0o644),
    ):
        path = os.path.join(dest, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
