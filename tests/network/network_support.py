"""Helpers of the network tests: what the host has of a network (links, firewall
rules, namespaces), to check that lamina leaves nothing behind."""

from __future__ import annotations

import subprocess


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def firewall_rules() -> str:
    """Every iptables rule (filter and nat), as iptables-save prints them."""
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def rules_naming(*needles: str) -> list[str]:
    return [
        line
        for line in firewall_rules().splitlines()
        if line.startswith("-A") and any(n in line for n in needles)
    ]


def own_chains(subnet: str) -> set[str]:
    """The per-network chains netavark made for the network on ``subnet`` (named by a
    hash of the network's id, so another root's network on the same subnet, made after
    this one released it, has other chains)."""
    chains = set()
    for line in rules_naming(subnet):
        for word in line.split():
            if word.startswith("NETAVARK-") and "HOSTPORT" not in word:
                chains.add(word)
    return chains


def rules_of_chains(chains: set[str]) -> list[str]:
    return [line for line in firewall_rules().splitlines() if any(c in line for c in chains)]


def host_veth(netns: str) -> str:
    """The host-side index of the veth whose other end is eth0 in ``netns``."""
    out = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", "-o", "link", "show", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split(":")[1].strip().split("@if")[1]


def link_indexes() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":", 1)[0] for line in out.splitlines()}
