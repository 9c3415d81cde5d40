"""The contenders, each given the same network and origin: N direct pulls, an aria2c
BitTorrent swarm, and lamina's P2P (scheduler, seed peer, one peer a namespace).
Every one starts its clients on a barrier (an epoch they all sleep until) and counts
time from it to a verified blob."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import LAMINA
from bench.p2p.model import Rates, Result, client_server, kumar_ross, piece_rounds
from bench.p2p.netns import Node, Topology, sh
from bench.p2p.origin import AGENT, PYTHON, Origin, agent
from bench.p2p.procs import Proc, Procs, cpu_busy

PIECE = 4 << 20  # aria2's torrent pieces; lamina's piece size for a 256 MiB blob
BARRIER_S = 2.0  # time for N processes to start before the barrier


@dataclass
class Context:
    topo: Topology
    origin: Origin
    blob: Path
    size: int
    rates: Rates
    work: Path  # on tmpfs

    def bound(self) -> float:
        return kumar_ross(self.size, self.topo.n, self.rates)


class Skip(Exception):
    """This contender cannot run here; the message says why."""


def _measure(ctx: Context, name: str, body: Callable[[Procs, Result], None]) -> Result:
    """Run ``body`` with fresh processes and directories; fill in the origin's bytes,
    the host's CPU and every process's bill."""
    res = Result(name, ctx.topo.n, ctx.bound(), size=ctx.size,
                 pieces_s=piece_rounds(ctx.topo.n, PIECE, ctx.rates))  # fmt: skip
    workdir = ctx.work / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    procs = Procs(workdir / "logs")
    tx0 = ctx.topo.tx_bytes(ctx.topo.origin)
    body0 = ctx.origin.sent_body_bytes()
    t0 = time.monotonic()
    try:
        body(procs, res)
    except Skip as e:
        res.skipped = str(e)
    except Exception as e:  # noqa: BLE001 - one broken contender must not end the run
        res.skipped = f"error: {e}"
        print(f"  {name}: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        procs.close()
        busy0, total0, soft0 = res.cpu_at_barrier or (0.0, 0.0, 0.0)
        busy1, total1, soft1 = res.cpu_end or cpu_busy()
        res.wall_s = time.monotonic() - t0
        res.host_cpu_busy = (busy1 - busy0) / max(total1 - total0, 1.0)
        res.host_softirq = (soft1 - soft0) / max(total1 - total0, 1.0)
        res.origin_tx_bytes = ctx.topo.tx_bytes(ctx.topo.origin) - tx0
        if res.origin_body_bytes is None:
            res.origin_body_bytes = ctx.origin.sent_body_bytes() - body0
        res.procs = [p.stat() for p in procs.procs if p.role != "origin"]
        _keep_logs(workdir / "logs", name, ctx.topo.n)
        # the peers' copies: 256 MiB each on tmpfs, gone before the next contender
        for child in workdir.iterdir():
            if child.name != "logs":
                shutil.rmtree(child, ignore_errors=True)
    return res


def _keep_logs(logs: Path, name: str, n: int) -> None:
    """A copy of the logs off tmpfs, for reading after the run."""
    if not logs.exists():
        return
    dest = Path("/var/tmp/lamina-bench/p2p-logs") / f"{name}-n{n}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(logs, dest)


def _barrier(res: Result, at: float) -> None:
    """Sleep until the barrier and note the host's CPU counters then."""
    time.sleep(max(at - time.time(), 0.0))
    res.cpu_at_barrier = cpu_busy()


def _fetches(procs: Procs, ctx: Context, urls: list[str], at: float) -> list[Proc]:
    return [
        procs.start(
            "peer",
            f"fetch-{i + 1}",
            agent(peer, "fetch", url, "--at", f"{at:.6f}", "--digest", ctx.origin.digest),
            stdout=True,
        )
        for i, (peer, url) in enumerate(zip(ctx.topo.peers, urls, strict=False))
    ]


def _collect_fetches(procs: Procs, clients: list[Proc], at: float, timeout: float,
                     res: Result) -> None:  # fmt: skip
    _barrier(res, at)
    deadline = time.monotonic() + timeout
    for c in clients:
        procs.wait(c, max(deadline - time.monotonic(), 0.1))
    res.cpu_end = cpu_busy()
    for c in clients:
        out = c.log.with_suffix(".out")
        line = out.read_text().strip() if out.exists() else ""
        doc = json.loads(line) if line else {}
        if doc.get("ok"):
            res.completions_s.append(float(doc["done"]) - at)
        else:
            res.failed += 1
            why = doc.get("error") or doc.get("status") or "timed out"
            print(f"  {c.name}: failed ({why}): {c.log.read_text()[-300:]}", file=sys.stderr)


# (i) ------------------------------------------------------------------------------------


def direct(ctx: Context, n_max: int) -> Result:
    def body(procs: Procs, res: Result) -> None:
        cs = client_server(ctx.size, ctx.topo.n, ctx.rates)
        if ctx.topo.n > n_max:
            raise Skip(f"N direct pulls take >= {cs:.0f} s (N*F/u_s); --direct-max {n_max}")
        at = time.time() + BARRIER_S
        url = ctx.origin.url + ctx.origin.blob_path()
        clients = _fetches(procs, ctx, [url] * ctx.topo.n, at)
        _collect_fetches(procs, clients, at, cs * 2 + 60, res)
        res.note = f"client-server bound N*F/u_s = {cs:.1f} s"

    return _measure(ctx, "direct", body)


def framing(ctx: Context) -> tuple[float, float]:
    """One direct transfer alone against F/u_s: what tbf and TCP/IP framing cost."""
    procs = Procs(ctx.work / "framing-logs")
    try:
        at = time.time() + 0.5
        url = ctx.origin.url + ctx.origin.blob_path()
        client = procs.start("client", "framing", agent(ctx.topo.peers[0], "fetch", url, "--at",
                             f"{at:.6f}", "--digest", ctx.origin.digest), stdout=True)  # fmt: skip
        ideal = ctx.size * 8 / min(ctx.rates.origin_up, ctx.rates.peer_down)
        procs.wait(client, ideal * 3 + 30)
        doc = json.loads(client.log.with_suffix(".out").read_text() or "{}")
        if not doc.get("ok"):
            raise RuntimeError(f"the lone direct transfer failed: {doc}")
        seconds = float(doc["done"]) - float(doc["start"])
        return seconds, seconds / ideal
    finally:
        procs.close()


# (ii) -----------------------------------------------------------------------------------

TRACKER_PORT = 6969
ARIA2_COMMON = [
    "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
    "--seed-ratio=0.0",  # seed until told to stop: every leecher keeps serving
    "--bt-max-peers=55", "--file-allocation=none", "--summary-interval=0",
    "--console-log-level=warn", "--disable-ipv6=true", "--listen-port=6881",
    "--auto-file-renaming=false", "--allow-overwrite=true",
]  # fmt: skip


def ensure_aria2() -> str | None:
    """Install aria2, mktorrent and opentracker (Debian) if missing; None when present."""
    missing = [t for t in ("aria2c", "mktorrent", "opentracker") if shutil.which(t) is None]
    if not missing:
        return None
    print("installing aria2 mktorrent opentracker for the benchmark (apt)...", file=sys.stderr)
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "aria2", "mktorrent", "opentracker"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    still = [t for t in ("aria2c", "mktorrent", "opentracker") if shutil.which(t) is None]
    if still:
        return f"{', '.join(still)} missing and apt-get failed: {proc.stderr.strip()[-200:]}"
    return None


def _bdecode_info(data: bytes) -> bytes:
    """The raw bencoded ``info`` dictionary of a .torrent (its SHA-1 is the info hash)."""

    def end(i: int) -> int:  # index just past the value starting at i
        c = data[i : i + 1]
        if c == b"i":
            return data.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while data[i : i + 1] != b"e":
                i = end(i)
            return i + 1
        colon = data.index(b":", i)
        return colon + 1 + int(data[i:colon])

    i = 1  # inside the top-level dictionary
    while data[i : i + 1] != b"e":
        key_end = end(i)
        key = data[data.index(b":", i) + 1 : key_end]
        value_end = end(key_end)
        if key == b"info":
            return data[key_end:value_end]
        i = value_end
    raise ValueError("no info dictionary in the torrent")


def aria2(ctx: Context, setup_error: str | None) -> Result:
    def body(procs: Procs, res: Result) -> None:
        if setup_error:
            raise Skip(setup_error)
        topo = ctx.topo
        work = ctx.work / "aria2"
        seed_dir = work / "origin"
        seed_dir.mkdir(parents=True)
        os.link(ctx.blob, seed_dir / "blob.bin")
        torrent = work / "blob.torrent"
        announce = f"http://{topo.control.ip}:{TRACKER_PORT}/announce"
        sh("mktorrent", "-l", "22", "-a", announce, "-o", str(torrent), str(seed_dir / "blob.bin"))
        info_hash = hashlib.sha1(_bdecode_info(torrent.read_bytes())).digest()
        hook = work / "done.sh"
        hook.write_text('#!/bin/sh\ndate +%s.%N > "$3.done"\n')
        hook.chmod(0o755)

        # Debian's opentracker tracks only whitelisted torrents; it chroots to -d (so
        # the list is /wl there) and refuses to keep running as root.
        (work / "wl").write_text(info_hash.hex() + "\n")
        procs.start("tracker", "opentracker", topo.control.cmd(
            "opentracker", "-i", topo.control.ip, "-p", str(TRACKER_PORT), "-P",
            str(TRACKER_PORT), "-d", str(work), "-w", "/wl", "-u", "nobody"))  # fmt: skip
        procs.start("seed", "aria2-seed", topo.origin.cmd(
            "aria2c", *ARIA2_COMMON, "--check-integrity=true", "--bt-seed-unverified=false",
            f"--dir={seed_dir}", str(torrent)))  # fmt: skip
        scrape = (f"http://{topo.control.ip}:{TRACKER_PORT}/scrape?info_hash="
                  + urllib.parse.quote_from_bytes(info_hash))  # fmt: skip
        _wait_for(lambda: b"8:completei1e" in _get(topo.control.cmd, scrape), 60,
                  "the aria2 seed to announce itself complete")  # fmt: skip

        at = time.time() + BARRIER_S
        dirs = []
        for i, peer in enumerate(topo.peers, 1):
            d = work / f"p{i}"
            d.mkdir()
            dirs.append(d)
            procs.start("peer", f"aria2-{i}", peer.cmd(
                PYTHON, AGENT, "at", f"{at:.6f}", "aria2c", *ARIA2_COMMON,
                f"--dir={d}", f"--on-bt-download-complete={hook}", str(torrent)))  # fmt: skip
        timeout = client_server(ctx.size, topo.n, ctx.rates) + 120
        done = [d / "blob.bin.done" for d in dirs]
        _barrier(res, at)
        _wait_for(lambda: all(p.exists() for p in done), timeout, "every aria2 leecher")
        res.cpu_end = cpu_busy()
        for mark in done:
            res.completions_s.append(float(mark.read_text()) - at)
        procs.close()  # stop seeding before hashing, so the hashing costs no one time
        for d in dirs:
            if _sha256(d / "blob.bin") != ctx.origin.digest:
                res.failed += 1
        res.origin_body_bytes = 0  # the registry is not used: the origin is the seed
        res.note = "origin = aria2c initial seed in the origin namespace"

    return _measure(ctx, "aria2", body)


def _get(cmd: Callable[..., list[str]], url: str) -> bytes:
    proc = subprocess.run(cmd(PYTHON, AGENT, "get", url), capture_output=True, check=False)
    return proc.stdout


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


# (iii) ----------------------------------------------------------------------------------

SCHED_PORT = 7000
PEER_PORT = 7001
# the lamina under test: this tree's, or another tree's (LAMINA_P2P_BIN=/path/to/lamina)
P2P_LAMINA = [os.environ["LAMINA_P2P_BIN"]] if os.environ.get("LAMINA_P2P_BIN") else LAMINA


def _wait_up(procs: Procs, node: Node, url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers from inside ``node``; at once if a daemon has died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs.procs:
            procs.wait(p, 0.0)
            if not p.alive:
                raise RuntimeError(f"{p.name} exited {p.status}: {p.log.read_text()[-400:]}")
        probe = subprocess.run(agent(node, "wait", url, "1"), capture_output=True, check=False)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout:.0f}s")


def lamina_available() -> str | None:
    argv = [*P2P_LAMINA, "p2p", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return "lamina p2p CLI not available in this tree (merge the P2P branches first)"
    return None


def lamina(ctx: Context) -> Result:
    def body(procs: Procs, res: Result) -> None:
        missing = lamina_available()
        if missing:
            raise Skip(missing)
        topo = ctx.topo
        work = ctx.work / "lamina"
        key = work / "swarm.key"
        key.write_text(os.urandom(32).hex())
        sched = f"http://{topo.control.ip}:{SCHED_PORT}"
        procs.start("scheduler", "scheduler", topo.control.cmd(
            *P2P_LAMINA, "p2p", "scheduler", "--addr", f"{topo.control.ip}:{SCHED_PORT}",
            "--swarm-key", str(key)))  # fmt: skip
        seed_node = topo.seed or topo.origin
        upstream_local = ctx.origin.local if seed_node is topo.origin else ctx.origin.url
        procs.start("seed", "seed", seed_node.cmd(
            *P2P_LAMINA, "p2p", "peer", "--addr", f"{seed_node.ip}:{PEER_PORT}", "--scheduler",
            sched, "--upstream", upstream_local, "--cache", str(work / "seed"),
            "--swarm-key", str(key), "--seed"))  # fmt: skip
        for i, peer in enumerate(topo.peers, 1):
            procs.start("peer", f"peer-{i}", peer.cmd(
                *P2P_LAMINA, "p2p", "peer", "--addr", f"{peer.ip}:{PEER_PORT}", "--scheduler",
                sched, "--upstream", ctx.origin.url, "--cache", str(work / f"p{i}"),
                "--swarm-key", str(key)))  # fmt: skip
        _wait_up(procs, topo.control, f"{sched}/v1/status")
        for peer in [seed_node, *topo.peers]:
            _wait_up(procs, peer, f"http://{peer.ip}:{PEER_PORT}/v2/")
        at = time.time() + BARRIER_S
        urls = [f"http://{p.ip}:{PEER_PORT}{ctx.origin.blob_path()}" for p in topo.peers]
        clients = _fetches(procs, ctx, urls, at)
        for c in clients:
            c.role = "client"
        _collect_fetches(procs, clients, at, client_server(ctx.size, topo.n, ctx.rates) + 120,
                         res)  # fmt: skip
        status = _get(topo.control.cmd, f"{sched}/v1/status")
        (procs.logdir / "status.json").write_bytes(status)
        where = "its own namespace" if topo.seed else "the origin namespace"
        res.note = f"seed peer in {where}; origin body bytes = the registry's own count"

    return _measure(ctx, "lamina", body)
