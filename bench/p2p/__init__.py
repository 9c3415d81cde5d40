"""P2P distribution benchmark (issue 13): network namespaces on one bridge, tc tbf
shaping, a 256 MiB blob in lamina's registry, and three contenders on the same limits:
N direct pulls, an aria2c BitTorrent swarm, lamina's P2P peers. Needs root.

    python -m bench.p2p [--peers 8,16,32] [--size 256MiB] [--contenders direct,aria2,lamina]

Reports, per contender and N, the time until the last peer holds the verified blob
against the Kumar-Ross bound, p50/p90, origin egress / blob size, CPU seconds and peak
RSS per peer process, and the host's CPU; results in bench/results/p2p.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from bench.common import CACHE, RESULTS, tmpfs
from bench.p2p import contenders
from bench.p2p.model import Rates, Result, kumar_ross, parse_rate, parse_size, table
from bench.p2p.netns import Topology, sweep
from bench.p2p.origin import make_blob, start_origin
from bench.p2p.procs import Procs

CONTENDERS = ("direct", "aria2", "lamina")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.p2p", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--peers", default="8,16", help="N values, comma-separated (8,16)")
    p.add_argument("--size", default="256MiB", help="blob size (256MiB)")
    p.add_argument("--seed", type=int, default=13, help="random seed of the blob (13)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="direct,aria2,lamina")
    p.add_argument("--origin-up", default="100mbit", help="origin upload u_s (100mbit)")
    p.add_argument("--peer-up", default="50mbit", help="peer upload u_i (50mbit)")
    p.add_argument("--peer-down", default="200mbit", help="peer download d_i (200mbit)")
    p.add_argument(
        "--large-n",
        type=int,
        default=32,
        help="from this N on use --large-rates (two cores cannot carry more)",
    )
    p.add_argument("--large-rates", default="100mbit,25mbit,100mbit",
                   help="origin-up,peer-up,peer-down for N >= --large-n")  # fmt: skip
    p.add_argument("--direct-max", type=int, default=8,
                   help="largest N for the direct pulls (they take N*F/u_s)")  # fmt: skip
    p.add_argument("--own-seed", action="store_true",
                   help="lamina's seed peer in its own namespace (upload u_s) instead of "
                        "sharing the origin's")  # fmt: skip
    p.add_argument("--no-framing", action="store_true", help="skip the lone direct transfer")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def _rates(args: argparse.Namespace, n: int) -> tuple[Rates, bool]:
    if n >= args.large_n:
        up_s, up, down = (parse_rate(r) for r in args.large_rates.split(","))
        return Rates(up_s, up, down), True
    return Rates(parse_rate(args.origin_up), parse_rate(args.peer_up),
                 parse_rate(args.peer_down)), False  # fmt: skip


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so every finally below runs: processes, links, mounts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args([] if argv is None else argv)
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        print("p2p: skipped (needs root and iproute2: ip, tc)")
        return 0
    size = parse_size(args.size)
    ns = [int(x) for x in args.peers.split(",") if x]
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(chosen) - set(CONTENDERS)
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _terminate)
    # a shell's background job starts with SIGINT ignored; Ctrl-C must still clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    aria2_error = contenders.ensure_aria2() if "aria2" in chosen else None

    mnt = CACHE / "p2p"
    need_mib = (max(ns) + 4) * (size >> 20) + 512
    rows: list[dict[str, object]] = []
    extra: dict[str, object] = {}
    try:
        sweep()
        tmpfs(mnt, f"{need_mib}m")
        blob = mnt / "blob.bin"
        t = time.monotonic()
        digest = make_blob(blob, size, args.seed)
        print(f"blob {digest[:19]}... ({size >> 20} MiB, seed {args.seed}) in "
              f"{time.monotonic() - t:.1f}s", file=sys.stderr)  # fmt: skip
        for n in ns:
            rates, large = _rates(args, n)
            rows += _run_n(
                args, n, rates, large, chosen, mnt, blob, digest, size, extra, aria2_error
            )
    finally:
        sweep()
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    doc = {"bench": "p2p", "size": size, "results": rows, **extra}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "p2p.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(table(rows))
        for k, v in extra.items():
            print(f"{k}: {v}")
    return 0


def _run_n(args: argparse.Namespace, n: int, rates: Rates, large: bool, chosen: list[str],
           mnt: Path, blob: Path, digest: str, size: int, extra: dict[str, object],
           aria2_error: str | None) -> list[dict[str, object]]:  # fmt: skip
    bound = kumar_ross(size, n, rates)
    print(f"N={n}: u_s {rates.origin_up / 1e6:g} Mbit/s, u_i {rates.peer_up / 1e6:g}, "
          f"d_i {rates.peer_down / 1e6:g}{' (lowered for large N)' if large else ''}; "
          f"Kumar-Ross bound {bound:.1f} s", file=sys.stderr)  # fmt: skip
    topo = Topology(n, rates, own_seed=args.own_seed)
    procs = Procs(mnt / f"origin-n{n}" / "logs")
    rows: list[dict[str, object]] = []
    try:
        topo.create()
        storage = mnt / f"registry-n{n}"
        origin = start_origin(procs, topo.origin, storage, blob, digest)
        ctx = contenders.Context(topo, origin, blob, size, rates, mnt / f"run-n{n}")
        if not args.no_framing and "framing" not in extra:
            seconds, ratio = contenders.framing(ctx)
            ideal = size * 8 / rates.origin_up
            extra["framing"] = {"seconds": round(seconds, 2), "ideal_s": round(ideal, 2),
                                "x": round(ratio, 3)}  # fmt: skip
            print(f"  framing: one direct transfer {seconds:.1f} s vs F/u_s {ideal:.1f} s "
                  f"= {ratio:.3f}x", file=sys.stderr)  # fmt: skip
        for name in chosen:
            print(f"  {name} N={n} ...", file=sys.stderr)
            if name == "direct":
                res = contenders.direct(ctx, args.direct_max)
            elif name == "aria2":
                res = contenders.aria2(ctx, aria2_error)
            else:
                res = contenders.lamina(ctx)
            row = _row(res, rates, large)
            rows.append(row)
            print(f"  {name} N={n}: " + _one_line(row), file=sys.stderr)
    finally:
        procs.close()
        topo.destroy()
        shutil.rmtree(mnt / f"registry-n{n}", ignore_errors=True)
        shutil.rmtree(mnt / f"run-n{n}", ignore_errors=True)
    return rows


def _row(res: Result, rates: Rates, large: bool) -> dict[str, object]:
    row = res.summary()
    row["rates_mbit"] = {"origin_up": rates.origin_up / 1e6, "peer_up": rates.peer_up / 1e6,
                         "peer_down": rates.peer_down / 1e6}  # fmt: skip
    if large:
        row["note"] = "; ".join(filter(None, [str(row.get("note") or ""),
                                              "rates lowered for N this large"]))  # fmt: skip
    return row


def _one_line(row: dict[str, object]) -> str:
    if row.get("skipped"):
        return f"skipped: {row['skipped']}"
    return (
        f"last {row['last_s']} s = {row['x_bound']}x bound, p50 {row['p50_s']}, "
        f"p90 {row['p90_s']}, origin tx {row['origin_tx_x']}x F, failed {row['failed']}, "
        f"host CPU {row['host_cpu_busy']:.0%} (softirq {row['host_softirq']:.0%})"
    )  # type: ignore[str-format]
