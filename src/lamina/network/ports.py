"""``-p/--publish [IP:][HOST:]CTR[/tcp|udp]`` as netavark port mappings, and ``-P``
(every port the image EXPOSEs, each on a free host port).

Ranges as Docker takes them: ``-p 8000-8002:80-82`` (equal lengths, one netavark
mapping with ``range`` 3), ``-p 8000-8010:80`` (the first free port of the host
range), ``-p 80-82`` (a free block of consecutive host ports: netavark's ranges are
consecutive on both sides)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lamina.errors import InvalidArgument
from lamina.network.config import ip_to_int

PROTOCOLS = ("tcp", "udp")


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(
            f"invalid port {text!r} in {spec!r}", hint="use -p [IP:][HOST:]CTR[/tcp|udp]"
        )
    return int(text)


def _ports(text: str, spec: str) -> tuple[int, int]:
    """``80`` or ``80-82`` as (first, last)."""
    first, dash, last = text.partition("-")
    low = _port(first, spec)
    high = _port(last, spec) if dash else low
    if high < low:
        raise InvalidArgument(
            f"invalid port range {text!r} in {spec!r}", hint="give the lower port first: 80-82"
        )
    return low, high


def _is_free(protocol: str, host_ip: str, port: int) -> bool:
    import socket

    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host_ip or "0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_block(protocol: str, host_ip: str, count: int, spec: str) -> int:
    """The first port of ``count`` consecutive free host ports."""
    for _ in range(64):
        first = free_port(protocol, host_ip)
        if first + count <= 65536 and all(
            _is_free(protocol, host_ip, first + i) for i in range(1, count)
        ):
            return first
    raise InvalidArgument(
        f"found no {count} consecutive free host ports for {spec!r}",
        hint="give the host ports: -p HOSTFIRST-HOSTLAST:CTRFIRST-CTRLAST",
    )


def free_port(protocol: str, host_ip: str = "") -> int:
    """A port the kernel says is free now (as Podman picks one for ``-p CTR``)."""
    import socket

    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host_ip or "0.0.0.0", 0))
        return int(sock.getsockname()[1])


def parse_publish(spec: str) -> dict[str, Any]:
    """One ``-p`` item as a netavark port mapping (a free host port when none given)."""
    body, slash, protocol = spec.partition("/")
    protocol = protocol if slash else "tcp"
    if protocol not in PROTOCOLS:
        raise InvalidArgument(f"unknown protocol {protocol!r} in {spec!r}", hint="use tcp or udp")
    parts = body.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise InvalidArgument(
            f"invalid port mapping {spec!r}", hint="use -p [IP:][HOST:]CTR[/tcp|udp]"
        )
    host_ip = parts[0] if len(parts) == 3 else ""
    if host_ip:
        ip_to_int(host_ip)  # IPv4 only, as lamina's networks
    ctr_low, ctr_high = _ports(parts[-1], spec)
    count = ctr_high - ctr_low + 1
    host = parts[-2] if len(parts) >= 2 else ""
    if not host:
        host_port = (
            free_port(protocol, host_ip)
            if count == 1
            else _free_block(protocol, host_ip, count, spec)
        )
    else:
        host_low, host_high = _ports(host, spec)
        if count == 1 and host_high > host_low:  # Docker: any free port of the host range
            free = [p for p in range(host_low, host_high + 1) if _is_free(protocol, host_ip, p)]
            if not free:
                raise InvalidArgument(
                    f"no free host port in {host!r} for {spec!r}", hint="give a wider range"
                )
            host_port = free[0]
        elif host_high - host_low + 1 != count:
            raise InvalidArgument(
                f"the host and container ranges of {spec!r} differ in length",
                hint="give ranges of the same length, e.g. -p 8000-8002:80-82",
            )
        else:
            host_port = host_low
    return {
        "host_ip": host_ip,
        "container_port": ctr_low,
        "host_port": host_port,
        "range": count,
        "protocol": protocol,
    }


def expand(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One mapping per port (for display: a netavark range covers several)."""
    return [
        m | {"container_port": m["container_port"] + i, "host_port": m["host_port"] + i, "range": 1}
        for i in range(int(m.get("range") or 1))
    ]


def publish_all(exposed: Iterable[str]) -> list[dict[str, Any]]:
    """``-P``: the image's ``ExposedPorts`` keys (``80/tcp``, ``53/udp``, ``8080``)."""
    return [parse_publish(item if "/" in item else item + "/tcp") for item in exposed]


def check_unique(mappings: Sequence[dict[str, Any]]) -> None:
    seen = set()
    for m in (one for mapping in mappings for one in expand(mapping)):
        key = (m["host_ip"], m["host_port"], m["protocol"])
        if key in seen:
            raise InvalidArgument(f"host port {m['host_port']}/{m['protocol']} published twice")
        seen.add(key)


def format_mapping(m: dict[str, Any]) -> str:
    """``80/tcp -> 127.0.0.1:8080`` as ``lamina port`` and ``ps`` print it."""
    host = m.get("host_ip") or "0.0.0.0"
    return f"{m['container_port']}/{m['protocol']} -> {host}:{m['host_port']}"
