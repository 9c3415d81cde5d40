"""A peer's ``/metrics``: Prometheus text (exposition format 0.0.4), no client library.

Series: ``lamina_p2p_bytes_from_source_total``, ``lamina_p2p_bytes_from_peers_total``,
``lamina_p2p_bytes_uploaded_total``, ``lamina_p2p_bytes_served_total`` (blob bytes
sent to mirror clients), ``lamina_p2p_mirror_requests_total{kind,status}``,
``lamina_p2p_access_checks_total`` (HEADs the access check sent upstream), and every
other integer counter the engine keeps (``pieces_corrupt``, ``source_fallbacks``).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from lamina.p2p.mirror.app import MirrorStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _counter(lines: list[str], name: str, help_text: str, value: int) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]


def counter_values(counters: Any) -> dict[str, int]:
    """The integer fields of the engine's counters dataclass."""
    if not is_dataclass(counters):
        return {}
    out: dict[str, int] = {}
    for f in fields(counters):
        value = getattr(counters, f.name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[f.name] = value
    return out


def render(counters: Any, stats: MirrorStats, access_checks: int) -> bytes:
    lines: list[str] = []
    values = counter_values(counters)
    helps = {
        "bytes_from_source": "Blob bytes fetched from the upstream registry.",
        "bytes_from_peers": "Blob bytes fetched from other peers.",
        "bytes_uploaded": "Piece bytes sent to other peers.",
    }
    for name in ("bytes_from_source", "bytes_from_peers", "bytes_uploaded"):
        _counter(lines, f"lamina_p2p_{name}_total", helps[name], values.pop(name, 0))
    for name, value in sorted(values.items()):
        _counter(lines, f"lamina_p2p_{name}_total", f"The engine's {name} counter.", value)
    _counter(
        lines, "lamina_p2p_bytes_served_total", "Blob bytes sent to mirror clients.",
        stats.bytes_served,
    )  # fmt: skip
    _counter(
        lines, "lamina_p2p_access_checks_total",
        "Access-check HEADs sent to the upstream (cache misses).", access_checks,
    )  # fmt: skip
    lines += [
        "# HELP lamina_p2p_mirror_requests_total Mirror requests answered.",
        "# TYPE lamina_p2p_mirror_requests_total counter",
    ]
    for (kind, status), n in sorted(stats.requests.items()):
        lines.append(f'lamina_p2p_mirror_requests_total{{kind="{kind}",status="{status}"}} {n}')
    return ("\n".join(lines) + "\n").encode()


def parse(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text page (for ``status`` and tests)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out
