"""``python -m fuzz [TARGET...] [--runs N]``: fuzz each target in its own process.

Targets run one after another (``--jobs 2`` for two at a time), each as
``python -m fuzz.harness`` under atheris, started from its seed corpus
``fuzz/corpus/<target>/``. New corpus entries go to a temporary directory; a crash,
a timeout or an input slower than ``--slow`` seconds is saved to
``fuzz/findings/<target>/``, the slowest input of each run to
``fuzz/findings/slowest/<target>``. Prints one line per target (executions, findings,
the slowest input) and exits 1 if any target had a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fuzz.targets import MAX_LEN, TARGETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_DONE_RE = re.compile(rb"Done (\d+) runs in (\d+) second")
_RUN_RE = re.compile(rb"^#(\d+)\s", re.M)


@dataclass(frozen=True, slots=True)
class Result:
    target: str
    runs: int
    seconds: float
    findings: tuple[str, ...]  # paths of the saved inputs
    slowest_seconds: float
    slowest_input: bytes
    returncode: int
    log_tail: str

    def line(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        found = f"{len(self.findings)} finding(s)" if self.findings else "no findings"
        if self.returncode and not self.findings:
            found = f"worker failed (exit {self.returncode})"
        return (
            f"{self.target:<13} {self.runs:>9} execs in {self.seconds:7.1f} s"
            f" ({rate:7.0f}/s)  {found:<16} slowest {self.slowest_seconds * 1000:8.1f} ms"
            f" {self.slowest_input[:48]!r}"
        )


def run_target(
    target: str,
    runs: int,
    *,
    slow: float,
    max_len: int,
    findings_dir: Path,
    quiet: bool,
    max_time: int = 0,
) -> Result:
    """Fuzz one target for ``runs`` executions in a subprocess."""
    seeds = HERE / "corpus" / target
    out_dir = findings_dir / target
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.iterdir())
    with tempfile.TemporaryDirectory(prefix=f"lamina-fuzz-{target}-") as work:
        report = os.path.join(work, "report.json")
        corpus = os.path.join(work, "corpus")
        os.mkdir(corpus)
        cmd = [
            sys.executable,
            "-m",
            "fuzz.harness",
            target,
            f"--report={report}",
            f"--slow={slow}",
            f"-runs={runs}",
            f"-max_len={max_len}",
            # libFuzzer's own alarm catches inputs that never return (the harness's
            # check catches the slow ones that do)
            f"-timeout={max(int(slow * 10), 10)}",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={out_dir}/",
            "-print_final_stats=1",
            *([f"-max_total_time={max_time}"] if max_time else []),
            corpus,  # first directory: where libFuzzer writes what it discovers
            str(seeds),
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=False)
        seconds = time.monotonic() - start
        log = proc.stdout + proc.stderr
        done = _DONE_RE.search(log)
        if done:
            executed = int(done[1])
        else:
            counts = _RUN_RE.findall(log)
            executed = int(counts[-1]) if counts else 0
        stats: dict[str, float] = {}
        slowest = b""
        if os.path.exists(report):
            with open(report, encoding="utf-8") as f:
                stats = json.load(f)
            slowest = Path(report + ".slowest").read_bytes()
            keep = findings_dir / "slowest"
            keep.mkdir(parents=True, exist_ok=True)
            (keep / target).write_bytes(slowest)  # to replay it: python -m fuzz.harness
    found = tuple(sorted(str(p) for p in set(out_dir.iterdir()) - before))
    result = Result(
        target,
        executed,
        seconds,
        found,
        float(stats.get("slowest_seconds", 0.0)),
        slowest,
        proc.returncode,
        log[-4000:].decode("utf-8", "replace"),
    )
    if (result.findings or proc.returncode) and not quiet:
        sys.stderr.write(result.log_tail + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", "1000000")))
    parser.add_argument("--slow", type=float, default=1.0, help="seconds; slower is a finding")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input, bytes")
    parser.add_argument(
        "--max-time",
        type=int,
        default=int(os.environ.get("FUZZ_MAX_TIME", "0")),
        help="stop each target after this many seconds even if --runs is not reached",
    )
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", "1")))
    parser.add_argument("--findings", type=Path, default=HERE / "findings")
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")

    def one(target: str) -> Result:
        result = run_target(
            target,
            args.runs,
            slow=args.slow,
            max_len=MAX_LEN.get(target, args.max_len),
            findings_dir=args.findings,
            quiet=False,
            max_time=args.max_time,
        )
        sys.stdout.write(result.line() + "\n")
        for path in result.findings:
            sys.stdout.write(f"    finding: {path}\n")
        sys.stdout.flush()
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, targets))
    bad = [r for r in results if r.findings or r.returncode]
    total = sum(r.runs for r in results)
    sys.stdout.write(
        f"{len(results)} target(s), {total} executions, {len(bad)} with findings or failures\n"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
