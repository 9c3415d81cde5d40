"""Prometheus metrics of the registry server, in the text exposition format (Prometheus
"Exposition formats", version 0.0.4), without a client library.

Counters are plain dicts touched only from the event loop thread, so recording a
request is a few dict operations and a bisect, cheap enough for every request.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets in seconds (upper bounds, like the Prometheus client defaults but
# starting lower: a manifest HEAD takes well under a millisecond).
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def _label(value: str) -> str:
    # Exposition format: label values escape backslash, double quote and newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counts by method/route/status, bytes in and out by route, and a latency
    histogram by route."""

    __slots__ = ("_bytes_in", "_bytes_out", "_count", "_hist", "_requests", "_sum")

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._bytes_in: dict[str, int] = {}
        self._bytes_out: dict[str, int] = {}
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def record(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        *,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None:
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if bytes_in:
            self._bytes_in[route] = self._bytes_in.get(route, 0) + bytes_in
        if bytes_out:
            self._bytes_out[route] = self._bytes_out.get(route, 0) + bytes_out
        hist = self._hist.get(route)
        if hist is None:
            hist = self._hist[route] = [0] * (len(BUCKETS) + 1)
        hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] = self._sum.get(route, 0.0) + seconds
        self._count[route] = self._count.get(route, 0) + 1

    def render(self) -> bytes:
        lines: list[str] = []
        lines += [
            "# HELP lamina_registry_requests_total HTTP requests answered.",
            "# TYPE lamina_registry_requests_total counter",
        ]
        for (method, route, status), n in sorted(self._requests.items()):
            lines.append(
                f'lamina_registry_requests_total{{method="{_label(method)}",'
                f'route="{_label(route)}",status="{status}"}} {n}'
            )
        lines += _bytes_lines(
            "lamina_registry_received_bytes_total", "Request body bytes read.", self._bytes_in
        )
        lines += _bytes_lines(
            "lamina_registry_sent_bytes_total", "Response body bytes sent.", self._bytes_out
        )
        lines += [
            "# HELP lamina_registry_request_duration_seconds Time to answer a request.",
            "# TYPE lamina_registry_request_duration_seconds histogram",
        ]
        for route in sorted(self._hist):
            cumulative = 0
            label = _label(route)
            for bound, n in zip((*BUCKETS, float("inf")), self._hist[route], strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(
                    f'lamina_registry_request_duration_seconds_bucket{{route="{label}",'
                    f'le="{le}"}} {cumulative}'
                )
            lines.append(
                f'lamina_registry_request_duration_seconds_sum{{route="{label}"}} '
                f"{self._sum[route]:.6f}"
            )
            lines.append(
                f'lamina_registry_request_duration_seconds_count{{route="{label}"}} '
                f"{self._count[route]}"
            )
        return ("\n".join(lines) + "\n").encode()


def _bytes_lines(metric: str, help_text: str, values: dict[str, int]) -> Iterable[str]:
    yield f"# HELP {metric} {help_text}"
    yield f"# TYPE {metric} counter"
    for route, n in sorted(values.items()):
        yield f'{metric}{{route="{_label(route)}"}} {n}'
