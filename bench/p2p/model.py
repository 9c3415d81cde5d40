"""The pure parts of the P2P benchmark: sizes and rates, the Kumar-Ross bound, the
completion statistics and the result table. No I/O here, so they are easy to check."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
}
# tc's units: "mbit" is 10^6 bit/s, like iproute2 reads them.
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def parse_size(text: str) -> int:
    """``256MiB`` -> 268435456 bytes; SI (MB) and binary (MiB) units, bytes by default."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (try 256MiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_rate(text: str) -> float:
    """``50mbit``, ``50Mbit/s`` or ``50`` (Mbit/s) -> bits per second."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)(?:/s|ps)?\s*", text)
    if m is None:
        raise ValueError(f"not a rate: {text!r} (try 50mbit)")
    unit = m.group(2).lower() or "mbit"
    if unit not in _RATE_UNITS:
        raise ValueError(f"not a rate unit: {m.group(2)!r} (bit, kbit, mbit, gbit)")
    return float(m.group(1)) * _RATE_UNITS[unit]


def tc_rate(bps: float) -> str:
    """A rate in tc's syntax, exact to the bit."""
    return f"{round(bps)}bit"


@dataclass(frozen=True)
class Rates:
    """The shaped link rates, bits per second."""

    origin_up: float
    peer_up: float
    peer_down: float


def kumar_ross(size: int, n: int, rates: Rates) -> float:
    """The minimum time (s) to give ``n`` peers a file of ``size`` bytes:
    max{F/u_s, F/d_min, N*F/(u_s + sum u_i)} (Kumar & Ross 2006), all peers alike."""
    bits = size * 8
    return max(
        bits / rates.origin_up,
        bits / rates.peer_down,
        n * bits / (rates.origin_up + n * rates.peer_up),
    )


def piece_rounds(n: int, piece: int, rates: Rates) -> float:
    """The discrete-piece correction: floor(log2 N) piece-times c/u on top of the fluid
    bound (Bar-Noy & Kipnis; Mundinger, Weber & Weiss)."""
    return math.floor(math.log2(n)) * piece * 8 / rates.peer_up if n > 1 else 0.0


def client_server(size: int, n: int, rates: Rates) -> float:
    """The minimum time for ``n`` direct pulls: max{N*F/u_s, F/d_min}."""
    bits = size * 8
    return max(n * bits / rates.origin_up, bits / rates.peer_down)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


CPU_BUSY_MAX = 0.85  # above this the 2 cores, not the shaped links, set the pace


@dataclass
class ProcStat:
    """One process's bill: CPU seconds (user + system) and peak RSS (VmHWM)."""

    role: str
    cpu_s: float
    peak_rss_mb: float


@dataclass
class Result:
    contender: str
    n: int
    bound_s: float
    pieces_s: float = 0.0  # piece_rounds(): what 4 MiB pieces add to the bound at best
    completions_s: list[float] = field(default_factory=list)  # barrier -> verified blob
    failed: int = 0
    origin_tx_bytes: int = 0  # at the origin's veth (frames: headers included)
    origin_body_bytes: int | None = None  # what the origin server says it sent
    size: int = 0
    wall_s: float = 0.0
    host_cpu_busy: float = 0.0  # fraction of all cores busy during the run (/proc/stat)
    host_softirq: float = 0.0  # of which softirq (the network in the kernel)
    procs: list[ProcStat] = field(default_factory=list)
    skipped: str = ""
    note: str = ""
    # /proc/stat (busy, total) at the barrier: host CPU counts from there to the end
    cpu_at_barrier: tuple[float, float, float] | None = None
    cpu_end: tuple[float, float, float] | None = None  # ... to the last completion

    def cpu_warning(self) -> str:
        if self.host_cpu_busy <= CPU_BUSY_MAX:
            return ""
        return (f"host CPU {self.host_cpu_busy:.0%} > {CPU_BUSY_MAX:.0%}: CPU-bound, the "
                "time is the machine's, not the network's")  # fmt: skip

    @property
    def last_s(self) -> float:
        return max(self.completions_s) if self.completions_s else math.nan

    def summary(self) -> dict[str, object]:
        peers = [p for p in self.procs if p.role == "peer"]
        doc: dict[str, object] = {
            "contender": self.contender,
            "n": self.n,
            "skipped": self.skipped or None,
            "bound_s": round(self.bound_s, 2),
            "bound_with_pieces_s": round(self.bound_s + self.pieces_s, 2),
        }
        if self.skipped:
            return doc
        doc |= {
            "last_s": round(self.last_s, 2),
            "x_bound": round(self.last_s / self.bound_s, 3),
            "p50_s": round(percentile(self.completions_s, 0.5), 2),
            "p90_s": round(percentile(self.completions_s, 0.9), 2),
            "completed": len(self.completions_s),
            "failed": self.failed,
            "origin_tx_x": round(self.origin_tx_bytes / self.size, 3),
            "origin_body_x": (
                None
                if self.origin_body_bytes is None
                else round(self.origin_body_bytes / self.size, 3)
            ),
            "peer_cpu_s_mean": round(sum(p.cpu_s for p in peers) / len(peers), 2)
            if peers
            else None,
            "peer_cpu_s_max": round(max(p.cpu_s for p in peers), 2) if peers else None,
            "peer_rss_mb_max": round(max(p.peak_rss_mb for p in peers), 1) if peers else None,
            "host_cpu_busy": round(self.host_cpu_busy, 3),
            "host_softirq": round(self.host_softirq, 3),
            # our processes' CPU (rusage) per second of the run: the host figure also
            # holds whatever else this shared machine was doing
            "own_cpu_cores": round(sum(p.cpu_s for p in self.procs) / self.last_s, 2)
            if self.completions_s
            else None,
            "procs": [asdict(p) for p in self.procs],
            "note": "; ".join(filter(None, [self.note, self.cpu_warning()])) or None,
        }
        return doc


COLUMNS = (
    ("contender", "contender", "{}"),
    ("n", "N", "{}"),
    ("bound_s", "bound s", "{:.1f}"),
    ("last_s", "last s", "{:.1f}"),
    ("x_bound", "x bound", "{:.2f}"),
    ("p50_s", "p50 s", "{:.1f}"),
    ("p90_s", "p90 s", "{:.1f}"),
    ("origin_tx_x", "origin tx/F", "{:.2f}"),
    ("origin_body_x", "origin body/F", "{:.2f}"),
    ("peer_cpu_s_mean", "peer CPU s", "{:.1f}"),
    ("peer_rss_mb_max", "peer RSS MB", "{:.0f}"),
    ("own_cpu_cores", "own cores", "{:.2f}"),
    ("host_cpu_busy", "host CPU", "{:.0%}"),
    ("host_softirq", "softirq", "{:.0%}"),
)


def table(rows: Sequence[dict[str, object]]) -> str:
    """A fixed-width text table of result summaries; a skipped row says why."""
    head = [title for _, title, _ in COLUMNS]
    body: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        if row.get("skipped"):
            body.append([str(row["contender"]), str(row["n"]), f"{row['bound_s']:.1f}"])
            notes.append(f"{row['contender']} N={row['n']}: skipped, {row['skipped']}")
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        body.append(cells)
        if row.get("note"):
            notes.append(f"{row['contender']} N={row['n']}: {row['note']}")
    widths = [max(len(r[i]) if i < len(r) else 0 for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) for r in [head, *body]]
    return "\n".join([*lines, *notes])
