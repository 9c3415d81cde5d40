"""Timing helpers: run commands as children, measure wall time and peak RSS per child.

The machine is shared and noisy, so benchmarks interleave the contenders (A B A B ...)
in fresh directories and report medians and ratios, never absolute times across runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CACHE = Path(os.environ.get("LAMINA_BENCH_CACHE", "/var/tmp/lamina-bench"))
LAMINA = [str(REPO / ".venv" / "bin" / "lamina")]


@dataclass
class Sample:
    seconds: float
    max_rss_kb: int


@dataclass
class Contender:
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_rss_mb(self) -> float:
        return max(s.max_rss_kb for s in self.samples) / 1024


def _tree_hwm_kb(pid: int) -> int:
    """The largest VmHWM (own peak RSS) among ``pid`` and its descendants."""
    best, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        best = max(best, int(line.split()[1]))
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return best


def run_timed(
    cmd: str | Sequence[str],
    *,
    shell: bool = False,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    rss: bool = True,
) -> Sample:
    """Run one command; wall time and the peak RSS of the largest process in its tree.

    Peak RSS is VmHWM polled every 10 ms over the process tree: ru_maxrss would carry
    this (forking) process's own high-water mark across exec. ``rss=False`` skips the
    polling, for commands that take milliseconds (start latency).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, shell=shell, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    if rss:
        while proc.poll() is None:
            peak = max(peak, _tree_hwm_kb(proc.pid))
            time.sleep(0.01)
    else:
        proc.wait()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{cmd!r} exited {proc.returncode}: {err[-2000:]}")
    return Sample(elapsed, peak)


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def interleave(
    rounds: int,
    contenders: dict[str, Callable[[], Sample]],
    before: Callable[[str], None] | None = None,
) -> dict[str, Contender]:
    out = {name: Contender(name) for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            if before is not None:
                before(name)
            sample = fn()
            out[name].samples.append(sample)
            print(
                f"  round {r + 1} {name:<28} {sample.seconds:7.2f}s  "
                f"peak RSS {sample.max_rss_kb / 1024:6.1f} MB",
                file=sys.stderr,
            )
    return out


def report(
    bench: str, results: dict[str, Contender], baseline: str, extra: dict[str, object] | None = None
) -> dict[str, object]:
    base = results[baseline].median
    rows = {
        name: {
            "median_s": round(c.median, 3),
            "peak_rss_mb": round(c.peak_rss_mb, 1),
            "speedup_vs_" + baseline: round(base / c.median, 2) if c.median else None,
        }
        for name, c in results.items()
    }
    doc = {"bench": bench, "baseline": baseline, "results": rows, **(extra or {})}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{bench}.json").write_text(json.dumps(doc, indent=2) + "\n")
    summary = ", ".join(
        f"{name} {r['median_s']}s ({r['peak_rss_mb']} MB, x{r['speedup_vs_' + baseline]})"
        for name, r in rows.items()
    )
    print(f"{bench}: {summary}")
    return doc


def debian_tree() -> Path:
    """A Debian minbase tree (debootstrap, ~200 MB, ~6,800 entries), made once and cached."""
    tree = CACHE / "minbase"
    if (tree / "etc" / "debian_version").exists():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    mirror = "http://deb.debian.org/debian"
    for src in Path("/etc/apt/sources.list.d").glob("*"):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:"):
                mirror = line.split()[1]
                break
    tmp = CACHE / "minbase.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"making a Debian minbase tree with debootstrap from {mirror} ...", file=sys.stderr)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(tmp), mirror],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tmp.rename(tree)
    return tree


def tmpfs(path: Path, size: str) -> Path:
    """``path`` as a tmpfs mount of ``size`` (e.g. "8g") when root can mount one: the
    root filesystem's discard makes timings on it drift (ARCHITECTURE.md section 8)."""
    path.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(path) and os.geteuid() == 0:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
