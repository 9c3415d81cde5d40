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
