"""Container start latency and first run of a fresh image, against runc and podman.

warm:  lamina run --rm IMG /bin/true (default bridge network, and --network host)  vs
       runc run on a ready bundle  vs  podman run --rm (--network none, and bridge)
       (lamina and the bundle with the default seccomp filter and without it, so the
       cost of seccomp shows on its own: most of it is runc compiling the filter)
cold:  lamina load + run of a ~200 MB Debian image (unpack included)  vs  podman load + run
podman runs as root with its overlay driver and the ulimits this machine needs;
`--network none` except in the bridge contender (podman's netavark, like lamina's,
removes its per-container rules at exit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from bench.common import (
    CACHE,
    LAMINA,
    Contender,
    Sample,
    debian_tree,
    fresh,
    interleave,
    report,
    run_timed,
)

ROUNDS = int(os.environ.get("LAMINA_BENCH_RUN_ROUNDS", "20"))
PODMAN = ["podman", "--storage-driver", "overlay", "--runtime", "runc"]
PODMAN_RUN = [
    "run",
    "--rm",
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
]


def _ensure_podman() -> bool:
    if shutil.which("podman"):
        return True
    print("installing podman for the benchmark (apt)...", file=sys.stderr)
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "podman"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
        check=False,
    )
    return proc.returncode == 0 and shutil.which("podman") is not None


def _podman_works(archive: Path) -> bool:
    """Load the archive and run it once; False (with the reason printed) if podman
    cannot run containers here, so the benchmark goes on without it."""
    for args in (
        ["load", "-i", str(archive)],
        [*PODMAN_RUN, "docker.io/library/bench-bb:latest", "/bin/true"],
    ):
        proc = subprocess.run(
            [*PODMAN, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            print(f"skipping podman: `podman {args[0]}` failed: {lines[-1]}", file=sys.stderr)
            return False
    return True


def _lamina(root: Path, *args: str) -> None:
    subprocess.run([*LAMINA, "--root", str(root), *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    # An installed lamina runs from cached bytecode; `make` exports
    # PYTHONDONTWRITEBYTECODE, which would add compiling every module to each start.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    work = fresh(CACHE / "run")
    has_podman = _ensure_podman()
    if not has_podman:
        print(
            "skipping podman: it is not installed and apt-get could not install it", file=sys.stderr
        )
    has_podman = _warm(work, has_podman)
    _cold(work, has_podman)


def _warm(work: Path, has_podman: bool) -> bool:
    """Returns whether podman could run containers (the cold run skips it if not)."""
    print("start latency (warm, /bin/true):", file=sys.stderr)
    root = work / "root"
    _lamina(root, "bootstrap", "busybox", "-t", "bench-bb")
    _lamina(root, "run", "--rm", "bench-bb", "/bin/true")  # unpack once
    _lamina(root, "run", "--rm", "--network", "host", "bench-bb", "/bin/true")  # its plan
    bundle = work / "bundle"
    _lamina(root, "unpack", "bench-bb", str(bundle / "rootfs"))
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    # the same bundle with the filter lamina's default run gets (from its run plan)
    filtered = work / "bundle-seccomp"
    filtered.mkdir()
    spec["root"]["path"] = str(bundle / "rootfs")
    spec["linux"]["seccomp"] = _plan_seccomp(root)
    (filtered / "config.json").write_text(json.dumps(spec))
    unconfined = ("--security-opt", "seccomp=unconfined")
    _lamina(root, "run", "--rm", *unconfined, "bench-bb", "/bin/true")  # its own plan
    runc_root = work / "runc-state"
    archive = work / "bb.tar"
    _lamina(root, "save", "bench-bb", "-o", str(archive))
    # the first runs above cached the run plans; `require` fails loudly if a run would
    # not take the fast path (the number would then measure something else)
    fast = ["env", "LAMINA_FASTRUN=require", *LAMINA, "--root", str(root), "run", "--rm"]

    def runc(directory: Path) -> Sample:
        name = f"b{uuid.uuid4().hex[:12]}"
        return run_timed(
            ["runc", "--root", str(runc_root), "run", "-b", str(directory), name], rss=False
        )

    def bridged() -> Sample:
        # The run returns before netavark's teardown ends (it finishes detached); wait
        # for it, untimed, so the next contender does not pay for it.
        sample = run_timed([*fast, "bench-bb", "/bin/true"], rss=False)
        _lamina(root, "network", "inspect", "lamina")
        return sample

    contenders = {
        "lamina run --rm": bridged,
        "lamina run --rm --network host": lambda: run_timed(
            [*fast, "--network=host", "bench-bb", "/bin/true"], rss=False
        ),
        "lamina run --rm (seccomp=unconfined)": lambda: run_timed(
            [*fast, *unconfined, "bench-bb", "/bin/true"], rss=False
        ),
        "runc run (ready bundle)": lambda: runc(bundle),
        "runc run (ready bundle + seccomp)": lambda: runc(filtered),
    }
    has_podman = has_podman and _podman_works(archive)
    if has_podman:
        contenders["podman run --rm"] = lambda: run_timed(
            [*PODMAN, *PODMAN_RUN, "docker.io/library/bench-bb:latest", "/bin/true"], rss=False
        )
        bridge_run = [a if a != "none" else "bridge" for a in PODMAN_RUN]
        bridge = [*PODMAN, *bridge_run, "docker.io/library/bench-bb:latest", "/bin/true"]
        if subprocess.run(bridge, capture_output=True, check=False).returncode == 0:
            contenders["podman run --rm --network bridge"] = lambda: run_timed(bridge, rss=False)
        else:
            print("skipping podman --network bridge: it failed here", file=sys.stderr)
    results = interleave(ROUNDS, contenders)
    plain = [*LAMINA, "--root", str(root), "run", "--rm"]
    for name, extra in (
        ("lamina run --rm", ()),
        ("lamina run --rm --network host", ("--network", "host")),
        ("lamina run --rm (seccomp=unconfined)", unconfined),
    ):
        _peak(results[name], [*plain, *extra, "bench-bb", "/bin/true"])

    def ms(name: str) -> float:
        return results[name].median * 1000

    figures: dict[str, object] = {
        "lamina_overhead_ms": round(ms("lamina run --rm") - ms("runc run (ready bundle)"), 1),
        "bridge_network_cost_ms": round(
            ms("lamina run --rm") - ms("lamina run --rm --network host"), 1
        ),
        "seccomp_cost_ms": round(
            ms("lamina run --rm") - ms("lamina run --rm (seccomp=unconfined)"), 1
        ),
        "seccomp_cost_in_runc_ms": round(
            ms("runc run (ready bundle + seccomp)") - ms("runc run (ready bundle)"), 1
        ),
        "rounds": ROUNDS,
    }
    if "podman run --rm --network bridge" in results:
        figures["lamina_bridge_vs_podman_bridge"] = round(
            ms("lamina run --rm") / ms("podman run --rm --network bridge"), 2
        )
    report("run-latency", results, "runc run (ready bundle)", figures)
    return has_podman


def _plan_seccomp(root: Path) -> dict[str, object]:
    """The ``linux.seccomp`` of the run plan lamina's default run cached."""
    for path in (root / "cache" / "run").glob("*.json"):
        plan = json.loads(path.read_text())
        if not plan.get("variant") and plan.get("mode", "bridge") == "bridge":
            seccomp: dict[str, object] = plan["spec"]["linux"]["seccomp"]
            return seccomp
    raise SystemExit("no run plan of a default run: cannot read its seccomp filter")


def _peak(contender: Contender, cmd: list[str]) -> None:
    """One extra run with RSS polling; its peak replaces the (unmeasured) zeros."""
    sample = run_timed(cmd)
    for s in contender.samples:
        s.max_rss_kb = sample.max_rss_kb


def _cold(work: Path, has_podman: bool) -> None:
    print("first run of a fresh ~200 MB image (load + unpack + run):", file=sys.stderr)
    tree = debian_tree()
    seed = work / "seed-root"
    _lamina(seed, "import", str(tree), "-t", "bench-debian")
    archive = work / "debian.tar"
    _lamina(seed, "save", "bench-debian", "-o", str(archive))

    def lamina() -> Sample:
        root = fresh(work / "cold-root")
        return run_timed(
            f"{' '.join(LAMINA)} --root {root} load -q -i {archive} && "
            f"{' '.join(LAMINA)} --root {root} run --rm bench-debian /bin/true",
            shell=True,
        )

    contenders = {"lamina load + run": lamina}
    if has_podman:

        def podman() -> Sample:
            subprocess.run(
                [*PODMAN, "rmi", "-f", "docker.io/library/bench-debian:latest"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            return run_timed(
                f"{' '.join(PODMAN)} load -q -i {archive} && {' '.join(PODMAN)} "
                f"{' '.join(PODMAN_RUN)} docker.io/library/bench-debian:latest /bin/true",
                shell=True,
            )

        contenders["podman load + run"] = podman
    results = interleave(3, contenders)
    report("run-cold", results, "podman load + run" if has_podman else "lamina load + run")


if __name__ == "__main__":
    main()
