"""The origin: a random blob (fixed seed) pushed into lamina's own registry, which runs
in the origin namespace for the whole run."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import LAMINA, REPO
from bench.p2p.netns import Node, sh
from bench.p2p.procs import Proc, Procs

PYTHON = str(REPO / ".venv" / "bin" / "python")
AGENT = str(Path(__file__).with_name("agent.py"))
REGISTRY_PORT = 5000
REPOSITORY = "bench/p2p"


def agent(node: Node, *args: str) -> list[str]:
    return node.cmd(PYTHON, AGENT, *args)


def make_blob(path: Path, size: int, seed: int) -> str:
    """``size`` incompressible bytes from ``seed``, written in 1 MiB steps; the digest."""
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            f.write(chunk)
            hasher.update(chunk)
            left -= len(chunk)
    return f"sha256:{hasher.hexdigest()}"


@dataclass
class Origin:
    node: Node
    proc: Proc
    digest: str

    @property
    def url(self) -> str:
        """As the peers reach it (through the origin's shaped veth)."""
        return f"http://{self.node.ip}:{REGISTRY_PORT}"

    local = f"http://127.0.0.1:{REGISTRY_PORT}"  # from inside the origin namespace

    def blob_path(self) -> str:
        return f"/v2/{REPOSITORY}/blobs/{self.digest}"

    def sent_body_bytes(self) -> int:
        """The registry's own count of response body bytes (Prometheus text)."""
        text = sh(*agent(self.node, "get", f"{self.local}/metrics")).stdout
        total = 0
        for line in text.splitlines():
            m = re.match(r"lamina_registry_sent_bytes_total(?:\{[^}]*\})?\s+([0-9.e+]+)", line)
            if m:
                total += int(float(m.group(1)))
        return total


def start_origin(procs: Procs, node: Node, storage: Path, blob: Path, digest: str) -> Origin:
    argv = node.cmd(*LAMINA, "registry", "serve", "--addr", f"0.0.0.0:{REGISTRY_PORT}",
                    "--storage", str(storage))  # fmt: skip
    proc = procs.start("origin", "registry", argv)
    origin = Origin(node, proc, digest)
    sh(*agent(node, "wait", f"{origin.local}/v2/", "30"))
    print(f"pushing the {blob.stat().st_size >> 20} MiB blob {digest[:19]}...", file=sys.stderr)
    subprocess.run(agent(node, "push", origin.local, REPOSITORY, str(blob), digest), check=True)
    return origin
