"""``-p`` parsing: single ports, Docker's range forms, and their errors (pure, but the
free-port picks ask the kernel)."""

from __future__ import annotations

import socket

import pytest

from lamina.errors import InvalidArgument
from lamina.network.ports import check_unique, expand, parse_publish


def test_single_and_ranges() -> None:
    assert parse_publish("127.0.0.1:8080:80/udp") == {
        "host_ip": "127.0.0.1",
        "container_port": 80,
        "host_port": 8080,
        "range": 1,
        "protocol": "udp",
    }
    both = parse_publish("18000-18002:80-82")
    assert (both["host_port"], both["container_port"], both["range"]) == (18000, 80, 3)
    assert [(m["host_port"], m["container_port"]) for m in expand(both)] == [
        (18000, 80),
        (18001, 81),
        (18002, 82),
    ]
    block = parse_publish("80-83")
    assert block["range"] == 4 and block["container_port"] == 80
    for m in expand(block):  # consecutive and free when picked
        with socket.socket() as s:
            s.bind(("0.0.0.0", m["host_port"]))


def test_a_host_range_for_one_port_takes_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        m = parse_publish(f"127.0.0.1:{port}-{port + 1}:80")
        assert m["host_port"] == port + 1 and m["range"] == 1


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("8000-8001:80-82", "differ in length"),
        ("82-80", "lower port first"),
        ("8000:80-", "invalid port"),
        ("0:80", "invalid port"),
        ("80/sctp", "unknown protocol"),
    ],
)
def test_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_publish(spec)
    assert words in str(info.value) + (info.value.hint or "")


def test_overlapping_ranges_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="published twice"):
        check_unique([parse_publish("18000-18002:80-82"), parse_publish("18002:90")])
    check_unique([parse_publish("18000-18002:80-82"), parse_publish("18003:90")])
