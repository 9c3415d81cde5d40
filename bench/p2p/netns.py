"""The benchmark's network: one bridge, an origin and a control namespace and N peer
namespaces, each behind a veth into the bridge, shaped with tc tbf.

A peer's upload is the tbf on its own end of the veth (egress out of the namespace),
its download the tbf on the host's end (egress towards the namespace). Everything is
named with PREFIX so that a run killed hard leaves nothing that the next run's sweep
does not find.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.p2p.model import Rates, tc_rate

PREFIX = "lp2p"
BRIDGE = f"{PREFIX}br0"
NS_DEV = "veth0"
# tbf's bucket: 64 KiB holds one GSO super-packet, so tbf does not split them one by one.
BURST = "64kb"
LATENCY = "100ms"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass(frozen=True)
class Node:
    """One namespace on the bridge."""

    ns: str
    host_dev: str  # the host's end of the veth, on the bridge
    ip: str

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec`` execs: same pid)."""
        return ["ip", "netns", "exec", self.ns, *argv]


@dataclass
class Topology:
    n: int
    rates: Rates
    own_seed: bool = False
    origin: Node = field(init=False)
    control: Node = field(init=False)
    seed: Node | None = field(init=False, default=None)
    peers: list[Node] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.n > 250:
            raise ValueError("at most 250 peers (one /24 of addresses)")
        self.origin = Node(f"{PREFIX}-origin", f"{PREFIX}-o", "10.200.0.1")
        self.control = Node(f"{PREFIX}-ctl", f"{PREFIX}-c", "10.200.0.2")
        if self.own_seed:
            self.seed = Node(f"{PREFIX}-seed", f"{PREFIX}-s", "10.200.0.3")
        self.peers = [
            Node(f"{PREFIX}-p{i}", f"{PREFIX}-p{i}", f"10.200.1.{i}") for i in range(1, self.n + 1)
        ]

    @property
    def nodes(self) -> list[Node]:
        extra = [self.seed] if self.seed else []
        return [self.origin, self.control, *extra, *self.peers]

    def create(self) -> None:
        sweep()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        for node in self.nodes:
            self._add(node)
        # origin (and its own-namespace seed) upload u_s; the control plane unshaped
        self._tbf(self.origin, up=self.rates.origin_up, down=None)
        if self.seed:
            self._tbf(self.seed, up=self.rates.origin_up, down=None)
        for peer in self.peers:
            self._tbf(peer, up=self.rates.peer_up, down=self.rates.peer_down)

    def _add(self, node: Node) -> None:
        sh("ip", "netns", "add", node.ns)
        sh("ip", "link", "add", node.host_dev, "type", "veth", "peer", "name", NS_DEV,
           "netns", node.ns)  # fmt: skip
        sh("ip", "link", "set", node.host_dev, "master", BRIDGE, "up")
        sh(*node.cmd("ip", "addr", "add", f"{node.ip}/16", "dev", NS_DEV))
        sh(*node.cmd("ip", "link", "set", NS_DEV, "up"))
        sh(*node.cmd("ip", "link", "set", "lo", "up"))

    def _tbf(self, node: Node, *, up: float | None, down: float | None) -> None:
        shape = ["tbf", "burst", BURST, "latency", LATENCY]
        if up:
            sh(*node.cmd("tc", "qdisc", "add", "dev", NS_DEV, "root", "tbf", "rate",
                         tc_rate(up), *shape[1:]))  # fmt: skip
        if down:
            sh("tc", "qdisc", "add", "dev", node.host_dev, "root", "tbf", "rate",
               tc_rate(down), *shape[1:])  # fmt: skip

    def tx_bytes(self, node: Node) -> int:
        """Bytes ``node`` has sent into the bridge (frames, headers included): what the
        host's end of its veth received."""
        return int(Path(f"/sys/class/net/{node.host_dev}/statistics/rx_bytes").read_text())

    def destroy(self) -> None:
        sweep()


def sweep() -> None:
    """Remove every namespace, link and bridge of ours, this run's or a dead run's."""
    names = sh("ip", "netns", "list", check=False).stdout.split("\n")
    for line in names:
        ns = line.split(" ")[0]
        if ns.startswith(f"{PREFIX}-"):
            # deleting the namespace deletes its veth end, and with it the host's end
            sh("ip", "netns", "del", ns, check=False)
    links = sh("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(": ")
        if len(parts) > 1:
            name = parts[1].split("@")[0]
            if name.startswith(PREFIX):
                sh("ip", "link", "del", name, check=False)
    left = [ln for ln in sh("ip", "netns", "list", check=False).stdout.splitlines()
            if ln.startswith(f"{PREFIX}-")]  # fmt: skip
    if left:
        print(f"warning: namespaces left behind: {left}", file=sys.stderr)
