"""``-p/--publish [IP:][HOST:]CTR[/tcp|udp]`` as netavark port mappings, and ``-P``
(every port the image EXPOSEs, each on a free host port)."""

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
    container_port = _port(parts[-1], spec)
    host = parts[-2] if len(parts) >= 2 else ""
    host_port = _port(host, spec) if host else free_port(protocol, host_ip)
    return {
        "host_ip": host_ip,
        "container_port": container_port,
        "host_port": host_port,
        "range": 1,
        "protocol": protocol,
    }


def publish_all(exposed: Iterable[str]) -> list[dict[str, Any]]:
    """``-P``: the image's ``ExposedPorts`` keys (``80/tcp``, ``53/udp``, ``8080``)."""
    return [parse_publish(item if "/" in item else item + "/tcp") for item in exposed]


def check_unique(mappings: Sequence[dict[str, Any]]) -> None:
    seen = set()
    for m in mappings:
        key = (m["host_ip"], m["host_port"], m["protocol"])
        if key in seen:
            raise InvalidArgument(f"host port {m['host_port']}/{m['protocol']} published twice")
        seen.add(key)


def format_mapping(m: dict[str, Any]) -> str:
    """``80/tcp -> 127.0.0.1:8080`` as ``lamina port`` and ``ps`` print it."""
    host = m.get("host_ip") or "0.0.0.0"
    return f"{m['container_port']}/{m['protocol']} -> {host}:{m['host_port']}"
