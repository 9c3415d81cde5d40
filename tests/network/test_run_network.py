"""`lamina run` networking end to end (real netavark, real runc, real iptables): the
default private namespace, NAT out, published ports, names on a user network, and no
leftovers after a kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from network_support import host_veth, link_indexes, own_chains, rules_naming, rules_of_chains

from helpers.cli import LAMINA, Lamina

pytestmark = [pytest.mark.root, pytest.mark.interop]

HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


def _root(lamina: Lamina) -> Path:
    return Path(lamina.root)  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, *, tries: int = 50) -> str:
    """GET ``url``, waiting up to ~5 s for the server inside to come up."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def test_the_default_network_is_private(bb: Lamina) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = bb(
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            f"ls /sys/class/net; nc -w 1 127.0.0.1 {port} </dev/null && echo reached || "
            "echo refused; cat /etc/hosts; hostname",
        ).stdout
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()[0].close()
    lines = out.split()
    assert lines[:2] == ["eth0", "lo"]
    assert "refused" in out and "reached" not in out
    hostname = out.split()[-1]
    assert f"\t{hostname}" in out and "10.89." in out  # its own address in /etc/hosts
    # the host network is still there with --network host
    before = set(os.listdir("/sys/class/net"))
    host = bb("run", "--rm", "--network", "host", "bb", "ls", "/sys/class/net").stdout.split()
    after = set(os.listdir("/sys/class/net"))  # other processes add and remove links
    assert before & after <= set(host) <= before | after


def test_outbound_traffic_is_nat_ed(bb: Lamina, outside: tuple[str, str]) -> None:
    """The server's namespace has a route only to the host's end of its link, not to
    the container's subnet: its reply arrives only if the host masqueraded the call."""
    server_ip, _host_ip = outside
    ns = f"lamtest{os.getpid()}"
    routes = subprocess.run(
        ["ip", "-n", ns, "route"], capture_output=True, text=True, check=True
    ).stdout
    assert "10.89." not in routes and "default" not in routes
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, "busybox", "nc", "-l", "-p", "8080", "-e", "echo", "outside"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        out = bb("run", "--rm", "bb", "nc", "-w", "3", server_ip, "8080").stdout
        none = bb("run", "--rm", "--network", "none", "bb", "nc", "-w", "1", server_ip, "8080",
                  check=False)  # fmt: skip
    finally:
        server.kill()
        server.wait(timeout=10)
    assert out == "outside\n"
    assert none.returncode != 0


def test_a_published_port_serves_the_host(bb: Lamina) -> None:
    port = _free_port()
    cid = bb(
        "run",
        "-d",
        "-p",
        f"127.0.0.1:{port}:80",
        "bb",
        "sh",
        "-c",
        HTTPD.format(text="hello-from-httpd"),
    ).stdout.strip()
    try:
        assert _get(f"http://127.0.0.1:{port}/") == "hello-from-httpd\n"
        assert bb("port", cid).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
        assert bb("port", cid, "80").stdout == f"127.0.0.1:{port}\n"
        # ps shows it as Docker does, in the table and in --json
        assert f"127.0.0.1:{port}->80/tcp" in bb("ps").stdout
        [row] = [c for c in json.loads(bb("ps", "--json").stdout) if c["id"] == cid]
        assert row["ports"] == [f"127.0.0.1:{port}->80/tcp"]
    finally:
        bb("rm", "-f", cid)
    assert rules_naming(f"--dport {port}") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()


def test_a_published_port_range_serves_each_port(bb: Lamina) -> None:
    port = _free_port()
    while port > 65000:
        port = _free_port()
    two = (
        "mkdir -p /a /b && echo a > /a/index.html && echo b > /b/index.html && "
        "httpd -p 80 -h /a && exec httpd -f -p 81 -h /b"
    )
    cid = bb(
        "run", "-d", "-p", f"127.0.0.1:{port}-{port + 1}:80-81", "bb", "sh", "-c", two
    ).stdout.strip()  # fmt: skip
    try:
        assert _get(f"http://127.0.0.1:{port}/") == "a\n"
        assert _get(f"http://127.0.0.1:{port + 1}/") == "b\n"
        assert bb("port", cid).stdout == (
            f"80/tcp -> 127.0.0.1:{port}\n81/tcp -> 127.0.0.1:{port + 1}\n"
        )
        assert bb("port", cid, "81").stdout == f"127.0.0.1:{port + 1}\n"
    finally:
        bb("rm", "-f", cid)
    assert rules_naming(f"--dport {port}") == []


def test_containers_on_a_user_network_reach_each_other_by_name(bb: Lamina) -> None:
    bb("network", "create", "backend")
    web = bb(
        "run", "-d", "--name", "web", "--network", "backend", "bb", "sh", "-c",
        HTTPD.format(text="hello-by-name"),
    ).stdout.strip()  # fmt: skip
    try:
        out = bb(
            "run", "--rm", "--network", "backend", "bb", "sh", "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/ && exit 0; sleep 0.3; done;"
            " exit 1",
        ).stdout  # fmt: skip
        assert out == "hello-by-name\n"
        inspect = json.loads(bb("network", "inspect", "backend").stdout)[0]
        assert list(inspect["containers"]) == [web]
        assert "backend" in bb("network", "ls", "-q").stdout.split()
        # containers on the default network do not know the name
        other = bb("run", "--rm", "bb", "nslookup", "web", check=False)
        assert other.returncode != 0
        busy = bb("network", "rm", "backend", check=False)
        assert busy.returncode != 0 and "used by" in busy.stderr
    finally:
        bb("rm", "-f", web)
    bb("network", "rm", "backend")
    assert "backend" not in bb("network", "ls", "-q").stdout.split()


def test_add_host_dns_and_dns_search(bb: Lamina) -> None:
    out = bb(
        "run", "--rm", "--add-host", "db:10.1.2.3", "--dns", "10.9.9.9", "--dns-search",
        "corp.example", "bb", "sh", "-c", "cat /etc/hosts /etc/resolv.conf",
    ).stdout  # fmt: skip
    assert "10.1.2.3\tdb\n" in out
    assert "nameserver 10.9.9.9\n" in out and "search corp.example\n" in out
    assert out.count("nameserver") == 1


def test_kill_9_of_a_foreground_run_leaves_nothing_after_the_next_command(bb: Lamina) -> None:
    root = _root(bb)
    bb("run", "--rm", "bb", "true")  # the plan: the next run takes the fast path
    proc = subprocess.Popen(
        [*LAMINA, "--root", str(root), "run", "--rm", "bb", "sleep", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    attachments = root / "networks" / "attachments"
    deadline = time.monotonic() + 30
    pid_file = None
    while time.monotonic() < deadline:
        records = list(attachments.glob("*.json")) if attachments.is_dir() else []
        if records:
            cid = records[0].stem
            pid_file = root / "containers" / cid / "bundle" / "pid"
            if pid_file.exists() and pid_file.read_text().strip():
                break
        time.sleep(0.05)
    assert pid_file is not None and pid_file.exists()
    record = json.loads(records[0].read_text())
    subnet = record["config"]["subnets"][0]["subnet"]
    chains = own_chains(subnet)
    veth = host_veth(record["netns"])
    assert chains and veth in link_indexes()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the container dies unwatched
    time.sleep(0.5)
    bb("run", "--rm", "bb", "true")  # the next command sweeps
    # (its own teardown ends in the background: any later command waits for it)
    assert json.loads(bb("network", "inspect", "lamina").stdout)[0]["containers"] == {}
    assert list(attachments.glob("*.json")) == []
    assert list((root / "runtime" / "netns").iterdir()) == []
    assert rules_of_chains(chains) == []
    assert rules_naming(record["container_id"]) == []
    assert veth not in link_indexes()


def test_the_fast_path_replays_bridge_and_host_runs_apart(bb: Lamina) -> None:
    fast = {"LAMINA_FASTRUN": "require"}
    bb("run", "--rm", "bb", "true")
    bb("run", "--rm", "--network", "host", "bb", "true")
    assert len(list((_root(bb) / "cache" / "run").glob("*.json"))) == 2
    bridge = bb("run", "--rm", "bb", "ls", "/sys/class/net", env=fast).stdout.split()
    host = bb("run", "--rm", "--network=host", "bb", "ls", "/sys/class/net", env=fast)
    assert bridge == ["eth0", "lo"]
    names = host.stdout.split()
    assert "lo" in names and len(names) > 2  # the host's links, not a private eth0 + lo
    assert list((_root(bb) / "networks" / "attachments").glob("*.json")) == []


def test_publish_all_maps_every_exposed_port(bb: Lamina, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM bb\nEXPOSE 80\n")
    bb("build", "-q", "-t", "web", "-f", str(ctx / "Containerfile"), str(ctx))
    cid = bb("run", "-d", "-P", "web", "sh", "-c", HTTPD.format(text="all")).stdout.strip()
    try:
        [line] = bb("port", cid).stdout.splitlines()
        assert line.startswith("80/tcp -> 0.0.0.0:")
        port = int(line.rsplit(":", 1)[1])
        assert _get(f"http://127.0.0.1:{port}/") == "all\n"
    finally:
        bb("rm", "-f", cid)
    refused = bb("run", "--rm", "-p", "80", "--network", "host", "bb", "true", check=False)
    assert refused.returncode != 0 and "published" in refused.stderr


def test_a_bridge_run_returns_before_its_teardown_and_the_next_command_waits(
    bb: Lamina,
) -> None:
    root = _root(bb)
    bb("run", "--rm", "bb", "true")  # the plan
    fast = {"LAMINA_FASTRUN": "require"}
    out = bb("run", "--rm", "bb", "sh", "-c", "exit 3", env=fast, check=False)
    assert out.returncode == 3
    assert bb("ps", "-a", "-q").stdout.strip() == ""  # the container is gone at once
    inspected = json.loads(bb("network", "inspect", "lamina").stdout)[0]
    assert inspected["containers"] == {}  # waited for the teardown under way
    assert list((root / "networks" / "attachments").glob("*.json")) == []
    assert list((root / "runtime" / "netns").iterdir()) == []
    subnet = inspected["subnets"][0]["subnet"]
    assert own_chains(subnet) == set()
