"""`lamina build` against `buildah build`, same Containerfiles, same contexts, same run.

workloads:
  multistage-c  examples/multistage-c: apt-get install gcc in a Debian stage, compile,
                COPY --from onto scratch (network-bound: both fetch from the apt mirror)
  copy-5000     FROM busybox + WORKDIR + COPY of a generated context of 5,000 small files
measures, per workload, interleaved (lamina, buildah, lamina, buildah ...):
  cold          a fresh root/storage holding only the base images (already unpacked for
                both: buildah unpacks on pull, lamina on a first `run`), untimed setup
  cached        the same build again, every step a cache hit (buildah with --layers)
Peak RSS is lamina's own process (VmHWM), not its RUN containers' (apt, gcc).
Work directories live on a private tmpfs so ext4 discard noise stays out.

  LAMINA_BENCH_BUILD_ROUNDS (default 3)   cold rounds per contender
  LAMINA_BENCH_BUILD_CACHED (default 3)   cached rebuilds after each cold build
  LAMINA_BENCH_BUILD_ONLY   multistage-c or copy-5000 to run one workload
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import CACHE, LAMINA, REPO, RESULTS, tmpfs

ROUNDS = int(os.environ.get("LAMINA_BENCH_BUILD_ROUNDS", "3"))
CACHED = int(os.environ.get("LAMINA_BENCH_BUILD_CACHED", "3"))
ONLY = os.environ.get("LAMINA_BENCH_BUILD_ONLY")
BASES = CACHE / "build-bases"
WORK = CACHE / "build-work"
FILES = 5000
COPY_CONTAINERFILE = """\
FROM busybox
WORKDIR /app
COPY . .
CMD ["ls", "/app"]
"""


@dataclass
class Timing:
    seconds: float
    own_rss_kb: int  # the build tool's own process (lamina's; buildah's)


@dataclass
class Series:
    cold: list[Timing] = field(default_factory=list)
    cached: list[Timing] = field(default_factory=list)

    @staticmethod
    def median(items: list[Timing]) -> float:
        return statistics.median(t.seconds for t in items)

    def peak_mb(self) -> float:
        return max(t.own_rss_kb for t in self.cold + self.cached) / 1024


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> Timing:
    """Wall time and the peak RSS of the command's own process (polled every 10 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _hwm_kb(proc.pid))
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-3000:]}")
    return Timing(elapsed, peak)


def _quiet(cmd: list[str], timeout: float = 1800) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=timeout)


def _wipe(path: Path) -> None:
    """Unmount whatever a build left mounted under ``path``, then delete it."""
    if not path.exists():
        return
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path)


# --- base images --------------------------------------------------------------------


def _bases() -> dict[str, Path]:
    """OCI layout tars of busybox and debian:bookworm, made once (debootstrap ~30 s)."""
    BASES.mkdir(parents=True, exist_ok=True)
    out = {"busybox": BASES / "busybox.tar", "debian:bookworm": BASES / "debian.tar"}
    root = BASES / "root"
    for ref, tar in out.items():
        if tar.exists():
            continue
        kind = "busybox" if ref == "busybox" else "debian"
        print(f"making the {ref} base image ...", file=sys.stderr)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
        subprocess.run(
            [*LAMINA, "--root", str(root), "bootstrap", kind, "-t", ref],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        _quiet([*LAMINA, "--root", str(root), "save", "--format", "oci", "-o", f"{tar}.tmp", ref])
        os.rename(f"{tar}.tmp", tar)
    _wipe(root)
    return out


# --- the contenders ------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    context: Path
    containerfile: Path
    bases: tuple[str, ...]


class Lamina:
    name = "lamina"

    def __init__(self, root: Path) -> None:
        self.root = root

    def setup(self, bases: dict[str, Path], wanted: tuple[str, ...]) -> None:
        for ref in wanted:
            _quiet([*LAMINA, "--root", str(self.root), "load", "-q", "-i", str(bases[ref])])
            # Unpack the base's snapshots now, as buildah's pull does.
            _quiet([*LAMINA, "--root", str(self.root), "run", "--rm", ref, "true"])

    def build(self, w: Workload) -> Timing:
        cmd = [*LAMINA, "--root", str(self.root), "build", "-q", "-t", "bench:x"]
        return _timed([*cmd, "-f", str(w.containerfile), str(w.context)])


class Buildah:
    name = "buildah"

    def __init__(self, root: Path) -> None:
        self.cmd = [
            "buildah",
            "--storage-driver",
            "overlay",
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
        ]

    def setup(self, bases: dict[str, Path], wanted: tuple[str, ...]) -> None:
        for ref in wanted:
            _quiet([*self.cmd, "pull", "-q", f"oci-archive:{bases[ref]}"])

    def build(self, w: Workload) -> Timing:
        # runc: buildah's default crun fails on this host's hybrid cgroups. --layers:
        # without it buildah caches nothing, and the cached rebuild would be a cold one.
        args = ["build", "-q", "--runtime", "runc", "--pull=never", "--layers", "-t", "bench:x"]
        return _timed([*self.cmd, *args, "-f", str(w.containerfile), str(w.context)])


# --- workloads ------------------------------------------------------------------------


def _copy_context(parent: Path) -> Path:
    ctx = parent / "copy-5000"
    if (ctx / "Containerfile").exists():
        return ctx
    rng = random.Random(5000)
    for i in range(FILES):
        d = ctx / f"pkg{i // 100:02d}" / f"mod{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:04d}.py").write_bytes(rng.randbytes(rng.randint(100, 4000)))
    (ctx / "Containerfile").write_text(COPY_CONTAINERFILE)
    return ctx


def _workloads(parent: Path) -> list[Workload]:
    ex = REPO / "examples" / "multistage-c"
    copy_ctx = _copy_context(parent)
    all_ = [
        Workload("multistage-c", ex, ex / "Containerfile", ("debian:bookworm",)),
        Workload("copy-5000", copy_ctx, copy_ctx / "Containerfile", ("busybox",)),
    ]
    return [w for w in all_ if ONLY in (None, w.name)]


def _measure(w: Workload, bases: dict[str, Path], work: Path) -> dict[str, Series]:
    makers: dict[str, Callable[[Path], Lamina | Buildah]] = {"lamina": Lamina, "buildah": Buildah}
    series = {name: Series() for name in makers}
    for r in range(ROUNDS):
        for name, make in makers.items():
            root = work / f"{name}-{r}"
            tool = make(root)
            tool.setup(bases, w.bases)
            cold = tool.build(w)
            series[name].cold.append(cold)
            cached = [tool.build(w) for _ in range(CACHED)]
            series[name].cached += cached
            print(
                f"  {w.name} round {r + 1} {name:<8} cold {cold.seconds:7.2f}s  cached "
                + " ".join(f"{c.seconds:.2f}s" for c in cached)
                + f"  own peak RSS {max(t.own_rss_kb for t in [cold, *cached]) / 1024:.0f} MB",
                file=sys.stderr,
            )
            _wipe(root)
    return series


def main() -> None:
    if shutil.which("buildah") is None:
        print("build: buildah is not installed; skipped", file=sys.stderr)
        return
    bases = _bases()
    work = tmpfs(WORK, "12g")
    doc: dict[str, object] = {"bench": "build", "baseline": "buildah", "workloads": {}}
    try:
        contexts = work / "contexts"
        for w in _workloads(contexts):
            print(f"build {w.name}:", file=sys.stderr)
            series = _measure(w, bases, work / "roots")
            lam, bah = series["lamina"], series["buildah"]
            row = {
                "lamina_cold_s": round(Series.median(lam.cold), 3),
                "buildah_cold_s": round(Series.median(bah.cold), 3),
                "cold_ratio_lamina_over_buildah": round(
                    Series.median(lam.cold) / Series.median(bah.cold), 2
                ),
                "lamina_cached_s": round(Series.median(lam.cached), 3),
                "buildah_cached_s": round(Series.median(bah.cached), 3),
                "cached_ratio_lamina_over_buildah": round(
                    Series.median(lam.cached) / Series.median(bah.cached), 2
                ),
                "lamina_peak_rss_mb": round(lam.peak_mb(), 1),
                "buildah_peak_rss_mb": round(bah.peak_mb(), 1),
                "rounds": ROUNDS,
                "cached_per_round": CACHED,
                "targets": {
                    "cold_within_1.0x": Series.median(lam.cold) <= Series.median(bah.cold),
                    "cached_under_0.5s": Series.median(lam.cached) < 0.5,
                    "cached_faster_than_buildah": Series.median(lam.cached)
                    < Series.median(bah.cached),
                },
            }
            doc["workloads"][w.name] = row  # type: ignore[index]
            print(
                f"build {w.name}: cold lamina {row['lamina_cold_s']}s vs buildah "
                f"{row['buildah_cold_s']}s (x{row['cold_ratio_lamina_over_buildah']}), "
                f"cached lamina {row['lamina_cached_s']}s vs buildah {row['buildah_cached_s']}s "
                f"(x{row['cached_ratio_lamina_over_buildah']}), lamina peak RSS "
                f"{row['lamina_peak_rss_mb']} MB"
            )
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "build.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
