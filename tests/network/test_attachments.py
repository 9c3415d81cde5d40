"""lamina.network against the real netavark: a container's namespace, lease, veth and
firewall rules are made by attach and all gone after detach or a sweep."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from network_support import (
    host_links,
    host_veth,
    link_indexes,
    own_chains,
    rules_of_chains,
)

from lamina.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from lamina.network import attachments, config, netns
from lamina.network.stack import NetavarkNetworks

pytestmark = [pytest.mark.root, pytest.mark.interop]

A = "a" * 64
B = "b" * 64


def _addresses(path: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={path}", "ip", "-4", "-o", "addr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_attach_leases_wires_and_detach_removes_all(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    nets = NetavarkNetworks(root)
    one = nets.attach(A, "one", "lamina")
    two = nets.attach(B, "two", "lamina")
    try:
        net = config.load(root, "lamina")
        subnet = net["subnets"][0]["subnet"]
        assert subnet.startswith("10.89.") and subnet.endswith(".0/24")
        assert one["ip"] != two["ip"]
        assert one["ip"].rsplit(".", 1)[1] == "2" or two["ip"].rsplit(".", 1)[1] == "2"
        assert f"{one['ip']}/24" in _addresses(one["netns"])
        bridge = net["network_interface"]
        assert bridge in host_links()
        chains = own_chains(subnet)  # NAT out: netavark's masquerade rules
        assert chains
        veths = {host_veth(one["netns"]), host_veth(two["netns"])}
        assert veths <= link_indexes()
        assert nets.inspect("lamina")["containers"].keys() == {A, B}
        with pytest.raises(InvalidArgument, match="default"):
            nets.remove("lamina")
    finally:
        nets.detach(A)
        nets.detach(B)
    assert attachments.list_records(root) == []
    assert not os.path.exists(one["netns"]) and not os.path.exists(two["netns"])
    # (not "the bridge is gone": once released, another root's network may take the
    # same subnet and bridge name at once when tests run in parallel)
    assert not veths & link_indexes()
    assert rules_of_chains(chains) == []
    nets.detach(A)  # idempotent


def test_a_freed_address_is_leased_again(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    nets = NetavarkNetworks(root)
    first = nets.attach(A, "one", "lamina")
    nets.detach(A)
    again = nets.attach(B, "two", "lamina")
    nets.detach(B)
    assert first["ip"] == again["ip"]


def test_sweep_tears_down_what_a_crash_left(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    nets = NetavarkNetworks(root)
    rec = nets.attach(A, "one", "lamina")
    chains = own_chains(rec["config"]["subnets"][0]["subnet"])
    veth = host_veth(rec["netns"])
    assert nets.sweep(lambda cid: False) == []  # its owner (this process) lives
    # as if the process that attached it had been killed
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = Path(attachments.record_path(root, A))
    path.write_text(json.dumps({**json.loads(path.read_text()), "owner_pid": dead.pid}))
    assert nets.sweep(lambda cid: True) == []  # the container still runs
    assert nets.sweep(lambda cid: cid != A) == [A]
    assert attachments.read(root, A) is None
    assert not netns.is_bound(rec["netns"])
    assert rules_of_chains(chains) == [] and veth not in link_indexes()


def test_user_networks_get_dns_and_their_own_subnet(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    nets = NetavarkNetworks(root)
    made = nets.create("backend")
    with pytest.raises(AlreadyExists):
        nets.create("backend")
    with pytest.raises(InvalidArgument):
        nets.create("host")
    with pytest.raises(InvalidArgument):
        nets.create("-bad")
    default = config.load(root, "lamina")
    assert made["subnets"] != default["subnets"]
    assert made["dns_enabled"] and not default["dns_enabled"]
    assert [n["name"] for n in nets.list()] == ["backend", "lamina"]
    rec = nets.attach(A, "web", "backend", aliases=["web"])
    try:
        assert rec["dns_servers"] == [made["subnets"][0]["gateway"]]
        with pytest.raises(Conflict):
            nets.remove("backend")
    finally:
        nets.detach(A)
    nets.remove("backend")
    with pytest.raises(NotFound):
        nets.inspect("backend")


def test_a_subnet_is_claimed_across_roots(tmp_path: Path) -> None:
    first = NetavarkNetworks(str(tmp_path / "one"))
    second = NetavarkNetworks(str(tmp_path / "two"))
    a = first.create("n1", subnet="10.89.250.0/24")
    try:
        with pytest.raises(AlreadyExists, match="subnet"):
            second.create("n1", subnet="10.89.250.0/24")
        other = second.create("n2")
        assert other["subnets"] != a["subnets"]
        assert other["network_interface"] != a["network_interface"]
    finally:
        first.remove("n1")
    second.create("n3", subnet="10.89.250.0/24")  # released with its network
    second.remove("n3")


def test_a_teardown_cut_short_is_redone_by_the_next_detach(tmp_path: Path) -> None:
    from lamina.network import netavark

    root = str(tmp_path / "root")
    nets = NetavarkNetworks(root)
    rec = nets.attach(A, "one", "lamina")
    chains = own_chains(rec["config"]["subnets"][0]["subnet"])
    # as if a detach had been killed after netavark removed the veth: the record stays
    netavark.teardown(root, rec["netns"], rec)
    nets.detach(A)  # on main: "failed to delete container veth eth0", for ever
    assert attachments.read(root, A) is None
    assert not netns.is_bound(rec["netns"])
    assert rules_of_chains(chains) == []
