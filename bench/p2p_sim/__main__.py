"""``python -m bench.p2p_sim [N ...]``: the scheduler at 1,000 and 10,000 peers.

For each N: a flash crowd of N peers (arriving within 1 s) pulls one 256 MiB blob,
peer upload 50 Mbit/s, download 200 Mbit/s, origin 100 Mbit/s (the limits of
``bench/p2p``); no seed host, so the first peer goes back to source. Reported:

- p50/p99/max of one scheduling decision (a ``register`` or ``report``: wall time of
  the pure call), target p99 <= 5 ms;
- scheduler memory a peer: tracemalloc of the scheduler's whole state (hosts, peers,
  ids, bitfields, 32 piece costs each, parents) built for N peers that each hold every
  piece, divided by N, target <= 2 KiB;
- completion times (p50/p90/max) against the Kumar-Ross bound
  max{F/u_s, F/d_min, N*F/(u_s + sum u_i)}, and origin bytes / blob size.

Writes bench/results/p2p_sim.json.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tracemalloc

from bench.common import RESULTS
from bench.p2p_sim.sim import KEY, TASK, SimClock, simulate
from lamina.p2p.api import HostInfo, Report
from lamina.p2p.pieces import piece_count
from lamina.p2p.scheduling.scheduler import Scheduler


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def memory_per_peer(n: int, size: int = 256 << 20) -> float:
    """Bytes of scheduler state a peer, at its largest (every peer holds every piece)."""
    count = piece_count(size)
    digests = tuple(hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(count))
    clock = SimClock()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sched = Scheduler(clock, KEY, rng=random.Random(3))
    for i in range(n):
        hid = f"host-{i:05d}"
        sched.announce_host(
            HostInfo(
                hid,
                f"http://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:4001",
                rack=f"dc1|r{i % 10}",
            )
        )
        sched.register(TASK, f"{hid}/{TASK}", hid, size, "http://origin/blob")
        if i == 0:
            sched.report(
                TASK, Report(f"{hid}/{TASK}", done=tuple(range(count)), source_digests=digests)
            )
    for i in range(1, n):
        pid = f"host-{i:05d}/{TASK}"
        for k in range(32):
            clock.t += 0.5
            sched.report(TASK, Report(pid, done=(k % count,), digests_known=count))
        sched.report(TASK, Report(pid, done=tuple(range(count)), digests_known=count))
    del digests
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    # the task's own share (digests, holders list) is spread over its peers too
    return used / n


def main(argv: list[str] | None = None) -> None:
    sizes = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or [1000, 10000]
    rows = []
    for n in sizes:
        r = simulate(n)
        done = r.completion
        row = {
            "peers": n,
            "pieces": r.pieces,
            "decisions": len(r.decisions),
            "decision_p50_ms": round(_pct(r.decisions, 0.50) * 1e3, 3),
            "decision_p99_ms": round(_pct(r.decisions, 0.99) * 1e3, 3),
            "decision_max_ms": round(max(r.decisions) * 1e3, 3),
            "memory_per_peer_bytes": round(memory_per_peer(n)),
            "finished": len(done),
            "bound_s": round(r.bound, 2),
            "completion_p50_s": round(_pct(done, 0.5), 2),
            "completion_p90_s": round(_pct(done, 0.9), 2),
            "completion_max_s": round(max(done), 2) if done else None,
            "max_over_bound": round(max(done) / r.bound, 3) if done else None,
            "origin_over_blob": round(r.origin_bytes / r.size, 3),
            "sim_events": r.events,
            "sim_wall_s": round(r.wall, 1),
        }
        rows.append(row)
        print(
            f"p2p_sim N={n}: decision p99 {row['decision_p99_ms']} ms "
            f"(max {row['decision_max_ms']}), {row['memory_per_peer_bytes']} B/peer, "
            f"last peer {row['completion_max_s']} s = {row['max_over_bound']}x the bound "
            f"{row['bound_s']} s (p50 {row['completion_p50_s']} s), "
            f"origin {row['origin_over_blob']}x the blob, {row['finished']}/{n} finished",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "p2p_sim.json").write_text(
        json.dumps({"bench": "p2p_sim", "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
