"""Lazy-start mount mechanisms (issue 14): pyfuse3 (design A) vs EROFS + fanotify
pre-content (design B) vs the same tree on a plain ext4 directory.

``python -m bench.lazy_mechanisms [--quick]``. Generates (once, cached) a Debian-shaped
tree of ~20k inodes plus one 200 MB file, then per contender: mount time, a full
``find`` walk (cold, then warm), a cold read of 100 small files, a cold read of the
200 MB file, a re-read (page cache), a re-read after dropping the file's page cache
(the mechanism's own cache), and the daemon's peak RSS. ``fill`` reads the local
tree; the ``+20ms`` contenders sleep 20 ms per fill call to model a registry round trip.
Writes bench/results/lazy_mechanisms.json and prints a markdown table.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import CACHE, RESULTS
from lamina.lazy.mount import daemon
from lamina.lazy.mount.api import SourceSpec
from lamina.lazy.mount.localdir import scan

MiB = 1 << 20
BIG = "usr/lib/big/model.bin"


def generate(root: Path, seed: int = 14) -> None:
    """Debian-like: deep usr/ trees, many small files, .so symlink chains, hardlinks."""
    rnd = random.Random(seed)
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0

    def blob(n: int) -> bytes:
        return rnd.randbytes(n)

    def small_size() -> int:
        return max(0, min(int(rnd.lognormvariate(8.0, 1.6)), 2 * MiB))  # median ~3 KB

    for d in ("etc", "var/lib/dpkg/info", "usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    for i in range(400):  # packages
        pkg = f"pkg{i:03d}"
        doc = tmp / "usr/share/doc" / pkg
        doc.mkdir(parents=True)
        (doc / "copyright").write_bytes(blob(small_size()))
        (doc / "changelog.Debian.gz").write_bytes(blob(small_size()))
        (tmp / "var/lib/dpkg/info" / f"{pkg}.list").write_bytes(blob(small_size()))
        (tmp / "var/lib/dpkg/info" / f"{pkg}.md5sums").write_bytes(blob(small_size()))
        count += 5
        if i % 3 == 0:
            lib = tmp / "usr/lib/x86_64-linux-gnu" / f"lib{pkg}.so.1.0.0"
            lib.write_bytes(blob(small_size() * 4))
            os.symlink(lib.name, lib.with_name(f"lib{pkg}.so.1"))
            os.symlink(f"lib{pkg}.so.1", lib.with_name(f"lib{pkg}.so"))
            count += 3
        if i % 2 == 0:
            exe = tmp / "usr/bin" / pkg
            exe.write_bytes(blob(small_size() * 2))
            exe.chmod(0o755)
            count += 1
            if i % 10 == 0:
                os.link(exe, tmp / "usr/sbin" / pkg)
        # python-ish package trees: where the inode count of a real image comes from
        base = tmp / "usr/lib/python3/dist-packages" / pkg
        for j in range(rnd.randint(4, 80)):
            sub = base / f"m{j % 7}"
            sub.mkdir(parents=True, exist_ok=True)
            f = sub / f"mod{j}.py"
            f.write_bytes(blob(small_size()))
            count += 1
        man = tmp / "usr/share/man/man1"
        man.mkdir(parents=True, exist_ok=True)
        (man / f"{pkg}.1.gz").write_bytes(blob(small_size() // 4))
        count += 1
    for k in range(300):
        (tmp / "etc" / f"conf{k}").write_bytes(blob(small_size() // 8))
    os.mknod(tmp / "etc/null", 0o20666, os.makedev(1, 3))
    big = tmp / BIG
    big.parent.mkdir(parents=True)
    with open(big, "wb") as f:
        for _ in range(200):
            f.write(blob(MiB))
    tmp.rename(root)


def drop_file_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 3)


def walk(root: str) -> None:
    subprocess.run(
        ["find", root, "-printf", "%s %m %U %T@\\n"], stdout=subprocess.DEVNULL, check=True
    )


def read_all(paths: list[str]) -> None:
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(MiB):
                pass


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def measure(root: str, small: list[str], pid: int | None) -> dict[str, float]:
    m: dict[str, float] = {}
    m["walk_cold_s"] = timed(lambda: walk(root))
    m["walk_warm_s"] = timed(lambda: walk(root))
    paths = [os.path.join(root, p) for p in small]
    m["read_100_small_cold_s"] = timed(lambda: read_all(paths))
    big = os.path.join(root, BIG)
    m["read_200MB_cold_s"] = timed(lambda: read_all([big]))
    m["read_200MB_pagecache_s"] = timed(lambda: read_all([big]))
    drop_file_cache(big)
    m["read_200MB_mech_cache_s"] = timed(lambda: read_all([big]))
    if pid is not None:
        m["daemon_peak_rss_mb"] = peak_rss_mb(pid)
    return m


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    work = CACHE / "lazy-mech"
    tree = work / "tree"
    if not tree.exists():
        work.mkdir(parents=True, exist_ok=True)
        generate(tree)
    t_scan = timed(lambda: scan(str(tree)))
    ntree, _ = scan(str(tree))
    rnd = random.Random(1)
    files = sorted(
        str(p.relative_to(tree))
        for p in tree.rglob("*.py")
        if p.is_file() and 256 < p.stat().st_size < 64 * 1024
    )
    small = rnd.sample(files, 100)
    results: dict[str, dict[str, float]] = {}

    # Baseline: the same tree on ext4; cold = its files' page cache dropped.
    for p in small:
        drop_file_cache(str(tree / p))
    drop_file_cache(str(tree / BIG))
    results["ext4 dir"] = {"mount_s": 0.0, **measure(str(tree), small, None)}

    contenders = [("fuse", 0), ("erofs", 0)]
    if "--quick" not in args:
        contenders += [("fuse", 20), ("erofs", 20)]
    for design, delay in contenders:
        name = design + (f" +{delay}ms" if delay else "")
        mnt, state = work / "mnt", work / "state"
        shutil.rmtree(state, ignore_errors=True)
        mnt.mkdir(exist_ok=True)
        spec = SourceSpec(
            "lamina.lazy.mount.localdir:from_json",
            json.dumps({"root": str(tree), "delay_ms": delay}),
        )
        t = time.perf_counter()
        handle = daemon.start(design, spec, str(mnt), str(state / design), timeout=600)
        mount_s = round(time.perf_counter() - t, 3)
        try:
            results[name] = {"mount_s": mount_s, **measure(str(mnt), small, handle.pid)}
        finally:
            daemon.stop(handle)
        print(name, results[name], flush=True)

    doc = {
        "bench": "lazy_mechanisms",
        "inodes": len(ntree.inodes),
        "source_scan_s": t_scan,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lazy_mechanisms.json").write_text(json.dumps(doc, indent=2) + "\n")
    cols = list(next(iter(results.values())).keys() | {"daemon_peak_rss_mb"})
    cols.sort(key=lambda c: list(results["fuse"]).index(c) if c in results["fuse"] else 99)
    print(f"inodes: {len(ntree.inodes)}, tree scan (in every mount): {t_scan} s")
    print("| contender | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(str(row.get(c, "-")) for c in cols) + " |")


if __name__ == "__main__":
    main()
