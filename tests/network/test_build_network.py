"""Build RUN steps get the default bridge network (NAT out, as `lamina run`), so a
mirror in another namespace is reachable; `--network none` cannot reach it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import Lamina

pytestmark = [pytest.mark.root, pytest.mark.interop]


def test_build_run_reaches_out_by_default_and_not_with_none(
    bb: Lamina, outside: tuple[str, str], tmp_path: Path
) -> None:
    server_ip, _ = outside
    ns = f"lamtest{os.getpid()}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM bb\nRUN nc -w 3 {server_ip} 8080 > /fetched && ls /sys/class/net > /ifaces\n"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, "busybox", "nc", "-ll", "-p", "8080", "-e", "echo", "mirror"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        bb("build", "-q", "-t", "fetched", "-f", str(ctx / "Containerfile"), str(ctx))
        assert bb("run", "--rm", "fetched", "cat", "/fetched").stdout == "mirror\n"
        # it ran in a namespace of its own, not the host's
        assert bb("run", "--rm", "fetched", "cat", "/ifaces").stdout == "eth0\nlo\n"
        blocked = bb(
            "build", "--no-cache", "--network", "none", "-t", "nope",
            "-f", str(ctx / "Containerfile"), str(ctx), check=False,
        )  # fmt: skip
        assert blocked.returncode != 0 and "did not complete successfully" in blocked.stderr
    finally:
        server.kill()
        server.wait(timeout=10)
    root = Path(bb.root)  # type: ignore[attr-defined]
    assert list((root / "networks" / "attachments").glob("*.json")) == []
