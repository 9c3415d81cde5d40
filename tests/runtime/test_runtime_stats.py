"""`lamina stats` and `lamina top` through the real CLI, on detached busybox containers
run by real runc and crun: CPU of a busy loop, the memory limit, pids, bytes received
on the default bridge, bytes written to the container's root, the container's
processes (and no host ones), a stream of rounds, and the errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from typing import Any

import pytest

from helpers.cli import LAMINA, Lamina

pytestmark = pytest.mark.root

MiB = 1 << 20
BUSY = ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=1M"]


def sleeps(n: int) -> list[str]:
    """A shell that starts ``n`` sleeps and waits: n + 1 processes."""
    return ["sh", "-c", f"for i in $(seq {n}); do sleep 300 & done; wait"]


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    lamina("bootstrap", "busybox", "-t", "bb")
    return lamina


def start(bb: Lamina, runtime: str, name: str, *args: str, network: str = "none") -> str:
    """Run ``args`` detached in container ``name``; its id."""
    cid = bb(
        "run", "-d", "--runtime", runtime, "--network", network, "--name", name, *args
    ).stdout.strip()
    assert len(cid) == 64
    return cid


def stats(bb: Lamina, *names: str) -> dict[str, dict[str, Any]]:
    """One round of ``stats --no-stream --json``, by container name."""
    docs = json.loads(bb("stats", "--no-stream", "--json", *names).stdout)
    return {doc["name"]: doc for doc in docs}


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_cpu_memory_limit_and_pids(bb: Lamina, runtime: str) -> None:
    start(bb, runtime, "busy", "-m", "64m", "bb", *BUSY)
    start(bb, runtime, "idle", "bb", *sleeps(4))
    wait_for(lambda: stats(bb, "idle")["idle"]["pids"] == 5)
    got = stats(bb)  # no names: every running container
    assert set(got) == {"busy", "idle"}
    busy, idle = got["busy"], got["idle"]
    assert busy["cpu_percent"] > 10, busy  # a busy loop on a shared 2-core host
    assert idle["cpu_percent"] < 10, idle
    assert busy["mem_limit_bytes"] == 64 * MiB
    assert 0 < busy["mem_usage_bytes"] < 64 * MiB
    assert busy["mem_percent"] == pytest.approx(busy["mem_usage_bytes"] / (64 * MiB) * 100, 0.01)
    assert busy["pids"] == 1
    # no limit: the host's memory, as Docker shows it
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    assert idle["mem_limit_bytes"] == total
    assert set(busy) == {
        "id",
        "name",
        "cpu_percent",
        "mem_usage_bytes",
        "mem_limit_bytes",
        "mem_percent",
        "pids",
        "net_rx_bytes",
        "net_tx_bytes",
        "block_read_bytes",
        "block_write_bytes",
    }
    table = bb("stats", "--no-stream", "busy").stdout.splitlines()
    assert table[0].split("   ")[:3] == ["CONTAINER ID", "NAME", "CPU %"]
    assert "64MiB" in table[1] and table[1].split()[1] == "busy"


def _send(port: int, data: bytes, tries: int = 50) -> None:
    """Connect to the published port (the server inside may still be starting) and
    send ``data``."""
    for attempt in range(tries):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(data)
                return
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(0.1)


def test_net_rx_grows_when_the_container_receives(bb: Lamina, runtime: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ["sh", "-c", "while true; do nc -l -p 80 >/dev/null; done"]
    start(bb, runtime, "sink", "-p", f"127.0.0.1:{port}:80", "bb", *server, network="bridge")
    before = stats(bb, "sink")["sink"]
    _send(port, b"x" * (2 * MiB))
    wait_for(lambda: stats(bb, "sink")["sink"]["net_rx_bytes"] >= before["net_rx_bytes"] + 2 * MiB)
    after = stats(bb, "sink")["sink"]
    assert after["net_tx_bytes"] > before["net_tx_bytes"]  # its ACKs
    # --network none: only a loopback, which is not counted
    start(bb, runtime, "alone", "bb", "sleep", "300")
    alone = stats(bb, "alone")["alone"]
    assert (alone["net_rx_bytes"], alone["net_tx_bytes"]) == (0, 0)


def test_block_write_grows_after_a_synced_write(bb: Lamina, runtime: str) -> None:
    script = (
        "until [ -e /go ]; do sleep 0.1; done; "
        "dd if=/dev/zero of=/data bs=1M count=8 conv=fsync; touch /done; sleep 300"
    )
    start(bb, runtime, "writer", "bb", "sh", "-c", script)
    before = stats(bb, "writer")["writer"]
    bb("exec", "writer", "touch", "/go")
    wait_for(lambda: bb("exec", "writer", "test", "-e", "/done", check=False).returncode == 0)
    after = stats(bb, "writer")["writer"]
    assert after["block_write_bytes"] >= before["block_write_bytes"] + 8 * MiB, (before, after)


def test_top_lists_the_containers_processes_only(bb: Lamina, runtime: str) -> None:
    start(bb, runtime, "sleepy", "bb", *sleeps(2))
    wait_for(lambda: stats(bb, "sleepy")["sleepy"]["pids"] == 3)
    out = bb("top", "sleepy").stdout.splitlines()
    assert out[0].split()[:2] == ["UID", "PID"]
    commands = sorted(line.split(None, 7)[7] for line in out[1:])
    assert commands == ["sh -c for i in $(seq 2); do sleep 300 & done; wait"] + ["sleep 300"] * 2
    procs = json.loads(bb("top", "--json", "sleepy", "-o", "pid,comm").stdout)
    assert sorted(p["command"] for p in procs) == ["sh", "sleep", "sleep"]
    pids = {p["pid"] for p in procs}
    assert os.getpid() not in pids and 1 not in pids  # no host process
    for pid in pids:  # each one is in the container's pid namespace, not the host's
        assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_errors_for_unknown_and_stopped_containers(bb: Lamina) -> None:
    for args in (["stats", "--no-stream", "nosuch"], ["top", "nosuch"]):
        proc = bb(*args, check=False)
        assert proc.returncode == 2, proc.stderr  # NotFound
        assert "no such container: nosuch" in proc.stderr
        assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    bb("run", "--network", "none", "--name", "done", "bb", "true")
    proc = bb("top", "done", check=False)
    assert proc.returncode == 8, proc.stderr  # Conflict
    assert "container done is not running" in proc.stderr
    assert "lamina ps -a" in proc.stderr
    # stats shows a stopped container it is asked for (or -a) with empty figures
    stopped = stats(bb, "done")["done"]
    assert (stopped["cpu_percent"], stopped["pids"], stopped["mem_usage_bytes"]) == (0.0, 0, 0)
    assert json.loads(bb("stats", "--no-stream", "--json").stdout) == []
    assert [d["name"] for d in json.loads(bb("stats", "--no-stream", "--json", "-a").stdout)] == [
        "done"
    ]
    proc = bb("top", "done", "-o", "comm", check=False)
    assert proc.returncode == 8
    proc = bb("stats", "--no-stream", "--format", "{{.Nope}}", check=False)
    assert proc.returncode == 4 and "Nope" in proc.stderr


def test_format_template(bb: Lamina) -> None:
    start(bb, "runc", "fmt", "-m", "32m", "bb", "sleep", "300")
    out = bb("stats", "--no-stream", "--format", "table {{.Name}}\\t{{.MemUsage}}\\t{{.PIDs}}")
    header, row = out.stdout.splitlines()
    assert header == "NAME\tMEM USAGE / LIMIT\tPIDS"
    name, memory, pids = row.split("\t")
    assert (name, pids) == ("fmt", "1") and memory.endswith(" / 32MiB")


def test_streaming_prints_a_round_a_second_until_ctrl_c(bb: Lamina) -> None:
    start(bb, "runc", "ticker", "bb", *BUSY)
    root = str(bb.root)  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [*LAMINA, "--root", root, "stats", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        t0 = time.monotonic()
        second = json.loads(proc.stdout.readline())
        between = time.monotonic() - t0
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err  # Ctrl-C ends a stream, as with docker stats
    assert [d["name"] for d in first] == [d["name"] for d in second] == ["ticker"]
    assert first[0]["cpu_percent"] > 10 and second[0]["cpu_percent"] > 10
    assert 0.5 < between < 3.0
