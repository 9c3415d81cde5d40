"""Fixtures of the network tests: a busybox image in a fresh root, and a server's
network namespace on this host to reach through NAT."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from helpers.cli import Lamina


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    lamina("bootstrap", "busybox", "-t", "bb")
    return lamina


@pytest.fixture
def outside() -> Iterator[tuple[str, str]]:
    """A server in another network namespace on this host, reached through a veth
    pair: (its address, the host's address on that link)."""
    n = os.getpid() % 200 + 20
    ns, here, there = f"lamtest{os.getpid()}", f"lt{os.getpid()}a", f"lt{os.getpid()}b"
    host_ip, server_ip = f"172.31.{n}.1", f"172.31.{n}.2"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
        ["ip", "link", "set", there, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", here],
        ["ip", "link", "set", here, "up"],
        ["ip", "-n", ns, "addr", "add", f"{server_ip}/30", "dev", there],
        ["ip", "-n", ns, "link", "set", there, "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield server_ip, host_ip
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
