"""`make bench`: run every benchmark; each prints a one-line summary and writes
bench/results/<name>.json."""

from __future__ import annotations

import sys

from bench import bench_compression, build, http_client, layers, p2p, pushpull, registry, run, s3
from bench.p2p_sim import report as p2p_sim

BENCHES = {
    "layers": layers.main,
    "compression": bench_compression.main,
    "run": run.main,
    "registry": registry.main,
    "pushpull": pushpull.main,
    "http_client": http_client.main,
    "build": build.main,
    "s3": s3.main,
    "p2p_sim": lambda: p2p_sim.main([]),
    # N = 8 and 16 with every contender (~10 min); `python -m bench.p2p --help` for more
    "p2p": lambda: p2p.main([]),
}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHES)
    for name in chosen:
        BENCHES[name]()


if __name__ == "__main__":
    main()
