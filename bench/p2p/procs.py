"""Processes of one benchmark run, each with its bill: CPU seconds from wait4's rusage
and peak RSS from VmHWM polled while it lives (ru_maxrss would inherit the forking
harness's own high-water mark, see bench/common.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.p2p.model import ProcStat


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass
class Proc:
    role: str
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    hwm_kb: int = 0
    cpu_s: float | None = None
    status: int | None = None
    ended: float | None = None

    @property
    def alive(self) -> bool:
        return self.status is None

    def stat(self) -> ProcStat:
        return ProcStat(self.role, round(self.cpu_s or 0.0, 3), round(self.hwm_kb / 1024, 1))


@dataclass
class Procs:
    """Every process started for one contender; ``close`` ends and reaps them all."""

    logdir: Path
    procs: list[Proc] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _poller: threading.Thread | None = None

    def start(self, role: str, name: str, argv: list[str], stdout: bool = False) -> Proc:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        out = self.logdir / f"{name}.out"
        with log.open("wb") as err, out.open("wb") as so:
            popen = subprocess.Popen(
                argv, stdout=so if stdout else subprocess.DEVNULL, stderr=err,
                start_new_session=True,  # Ctrl-C reaches the harness only; it ends them
            )  # fmt: skip
        proc = Proc(role, name, popen, log)
        with self._lock:
            self.procs.append(proc)
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, daemon=True)
            self._poller.start()
        return proc

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                live = [p for p in self.procs if p.alive]
            for p in live:
                p.hwm_kb = max(p.hwm_kb, _hwm_kb(p.popen.pid))
                self._reap(p, block=False)

    def _reap(self, p: Proc, *, block: bool) -> bool:
        with self._lock:
            if not p.alive:
                return True
            p.hwm_kb = max(p.hwm_kb, _hwm_kb(p.popen.pid))
            try:
                pid, status, usage = os.wait4(p.popen.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                p.status, p.cpu_s = -1, 0.0
                return True
            if pid == 0:
                return False
            p.status = os.waitstatus_to_exitcode(status)
            p.popen.returncode = p.status  # so Popen does not wait for it again
            p.cpu_s = usage.ru_utime + usage.ru_stime
            p.ended = time.time()
            return True

    def wait(self, p: Proc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._reap(p, block=False):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, p: Proc, grace: float = 5.0) -> None:
        if not p.alive:
            return
        p.hwm_kb = max(p.hwm_kb, _hwm_kb(p.popen.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.popen.pid, signal.SIGTERM)
        if not self.wait(p, grace):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            self._reap(p, block=True)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self._stop.set()
        if self._poller is not None:
            self._poller.join()


def cpu_busy() -> tuple[float, float, float]:
    """(busy, total, softirq) jiffies of all cores since boot, from /proc/stat; softirq
    is where the kernel's bridge, veth and tbf work lands, billed to no process."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total, fields[6]
