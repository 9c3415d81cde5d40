"""The mirror's pure rules: Range parsing, what is forwarded, which upstream."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidArgument
from lamina.p2p.mirror.headers import BadRange, parse_range, request_headers, response_headers
from lamina.p2p.mirror.upstreams import Upstreams, normalize_upstream


@pytest.mark.parametrize(
    ("value", "span"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=10-", (10, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole blob (RFC 9110 allows it)
        ("items=0-1", None),
    ],
)
def test_parse_range(value: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(value, 1000) == span


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=5-4", "bytes=-0", "bytes=-"])
def test_unsatisfiable_ranges(value: str) -> None:
    with pytest.raises(BadRange):
        parse_range(value, 1000)


def test_hop_by_hop_headers_stop_at_the_mirror() -> None:
    sent = request_headers(
        [
            ("Host", "peer:4001"),
            ("Authorization", "Bearer t"),
            ("Connection", "keep-alive, X-Trace"),
            ("X-Trace", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic x"),
            ("Accept", "a"),
            ("Accept", "b"),
            ("Content-Length", "3"),
        ]
    )
    assert sent == [("Authorization", "Bearer t"), ("Accept", "a"), ("Accept", "b")]
    back = response_headers([("Transfer-Encoding", "chunked"), ("Content-Length", "9"),
                             ("WWW-Authenticate", 'Bearer realm="x"')])  # fmt: skip
    assert back == [("WWW-Authenticate", 'Bearer realm="x"')]
    assert ("Content-Length", "9") in response_headers([("Content-Length", "9")], keep_length=True)


def test_upstream_selection_is_not_an_open_proxy() -> None:
    ups = Upstreams.of("127.0.0.1:5000", ["docker.io", "https://quay.io"])
    assert ups.default == "http://127.0.0.1:5000"
    assert ups.select(None) == ups.select("") == "http://127.0.0.1:5000"
    assert ups.select("docker.io") == "https://registry-1.docker.io"
    assert ups.select("QUAY.IO") == "https://quay.io"
    assert ups.select("evil.example.com") is None
    assert ups.select("127.0.0.1:5000") == "http://127.0.0.1:5000"
    for bad in ("ftp://x", "https://x/path", ""):
        with pytest.raises(InvalidArgument):
            normalize_upstream(bad)
