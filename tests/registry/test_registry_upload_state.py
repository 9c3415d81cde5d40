"""The upload state machine and blob Range reads."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.oci.digest import Digest
from lamina.registry.errors import RegistryError
from lamina.registry.ranges import content_range, parse_range
from lamina.registry.upload_state import (
    UploadSession,
    advance,
    apply_patch,
    chunk_min_length_header,
    finish,
    is_stale,
    location,
    new_session,
    range_header,
    upload_headers,
    verify_blob,
)

S0 = UploadSession("u1", "lib/x", 0, 100.0)
S10 = UploadSession("u1", "lib/x", 10, 100.0)


def test_location_and_range() -> None:
    assert location("lib/x", "u1") == "/v2/lib/x/blobs/uploads/u1"
    assert range_header(S10) == "0-9"
    assert range_header(S0) == "0-0"
    assert chunk_min_length_header(5) == "5"


@pytest.mark.parametrize(
    ("session", "content_range", "length", "want"),
    [
        (S0, "0-9", 10, 10),
        (S0, "0-9", None, 10),
        (S10, "10-10", 1, 11),
        (S10, " 10-19 ", 10, 20),
        (S10, None, 5, 15),  # streamed with a length
        (S10, None, None, None),  # streamed, length unknown: the server counts
        (S10, None, 0, 10),
    ],
)
def test_apply_patch_in_order(
    session: UploadSession, content_range: str | None, length: int | None, want: int | None
) -> None:
    assert apply_patch(session, content_range, length) == want


@pytest.mark.parametrize(
    "content_range",
    ["0-9", "5-14", "11-20", "20-30", "9-8", "10-9", "bytes 10-19", "10-", "-19", "a-b", ""],
)
def test_out_of_order_or_malformed_chunk_is_416_with_range(content_range: str) -> None:
    with pytest.raises(RegistryError) as info:
        apply_patch(S10, content_range, None)
    err = info.value
    assert (err.code, err.status, err.has_body) == ("RANGE_NOT_SATISFIABLE", 416, False)
    assert err.headers["Range"] == "0-9"
    assert err.headers["Location"] == "/v2/lib/x/blobs/uploads/u1"


@pytest.mark.parametrize(("content_range", "length"), [("10-19", 9), ("10-19", 11), (None, -1)])
def test_length_disagreeing_with_range(content_range: str | None, length: int) -> None:
    with pytest.raises(RegistryError) as info:
        apply_patch(S10, content_range, length)
    assert (info.value.code, info.value.status) == ("SIZE_INVALID", 400)


def test_advance_and_staleness() -> None:
    s = advance(S10, 5, now=200.0)
    assert (s.offset, s.updated, s.uuid) == (15, 200.0, "u1")
    assert S10.offset == 10  # sessions are values
    assert not is_stale(s, now=250.0, ttl=60)
    assert is_stale(s, now=261.0, ttl=60)
    assert is_stale(S10, now=161.0, ttl=60)
    assert not is_stale(S10, now=160.0, ttl=60)
    with pytest.raises(RegistryError):
        advance(S10, -1, now=1.0)


@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=20))
def test_sequential_chunks_always_accepted(sizes: list[int]) -> None:
    s = S0
    for size in sizes:
        end = apply_patch(s, f"{s.offset}-{s.offset + size - 1}", size)
        assert end == s.offset + size
        s = advance(s, size, now=0.0)
    assert s.offset == sum(sizes)


DATA = b"hello world"
D = Digest("sha256", hashlib.sha256(DATA).hexdigest())
D512 = Digest("sha512", hashlib.sha512(DATA).hexdigest())


def test_finish_accepts_matching_content() -> None:
    s = UploadSession("u", "x", len(DATA), 0.0)
    assert finish(s, D, D, len(DATA)) == D
    s512 = UploadSession("u", "x", len(DATA), 0.0, "sha512")
    assert finish(s512, D512, D512, len(DATA)) == D512


@pytest.mark.parametrize(
    ("session", "param", "computed", "size", "code"),
    [
        (UploadSession("u", "x", 11, 0.0), Digest("sha256", "0" * 64), D, 11, "DIGEST_INVALID"),
        (UploadSession("u", "x", 11, 0.0), D512, D, 11, "DIGEST_INVALID"),
        (UploadSession("u", "x", 11, 0.0), D, D, 10, "SIZE_INVALID"),
        (UploadSession("u", "x", 12, 0.0), D, D, 11, "SIZE_INVALID"),
    ],
)
def test_finish_refusals(
    session: UploadSession, param: Digest, computed: Digest, size: int, code: str
) -> None:
    with pytest.raises(RegistryError) as info:
        finish(session, param, computed, size)
    assert (info.value.code, info.value.status) == (code, 400)


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=99-99", 100, (99, 99)),
        ("BYTES = 1 - 2", 100, (1, 2)),
        ("bytes=0-1,5-6", 100, None),  # several ranges: whole blob
        ("items=0-1", 100, None),
        ("bytes=", 100, None),
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=0-" + "9" * 30, 100, None),
        ("bytes=0-0", 1, (0, 0)),
    ],
)
def test_parse_range(header: str | None, size: int, want: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == want


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        # last byte before the first: 416, not the whole blob (conformance "range 500-0")
        ("bytes=5-4", 100),
        ("bytes=500-0", 2048),
    ],
)
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(RegistryError) as info:
        parse_range(header, size)
    err = info.value
    assert (err.status, err.has_body) == (416, False)
    assert err.headers == {"Content-Range": f"bytes */{size}"}


def test_content_range() -> None:
    assert content_range(0, 9, 100) == "bytes 0-9/100"


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 400))
def test_range_is_always_inside_the_blob(a: int, b: int, size: int) -> None:
    try:
        got = parse_range(f"bytes={a}-{b}", size)
    except RegistryError:
        assert a >= size or b < a
        return
    assert got is not None
    start, end = got
    assert 0 <= start <= end < size and start == a


def test_new_session_and_upload_headers() -> None:
    s = new_session("lib/x", "u9", 5.0, "sha512")
    assert s == UploadSession("u9", "lib/x", 0, 5.0, "sha512")
    assert upload_headers(s) == {
        "Location": "/v2/lib/x/blobs/uploads/u9",
        "Range": "0-0",
        "Docker-Upload-UUID": "u9",
    }
    assert upload_headers(advance(s, 4, 6.0), min_length=1024) == {
        "Location": "/v2/lib/x/blobs/uploads/u9",
        "Range": "0-3",
        "Docker-Upload-UUID": "u9",
        "OCI-Chunk-Min-Length": "1024",
    }


def test_verify_blob() -> None:
    assert verify_blob(D, D, 11, 11) == D
    assert verify_blob(D, D, 11) == D
    with pytest.raises(RegistryError) as info:
        verify_blob(D, D, 10, 11)
    assert info.value.code == "SIZE_INVALID"
    with pytest.raises(RegistryError) as info:
        verify_blob(D, Digest("sha256", "1" * 64), 11, 11)
    assert info.value.code == "DIGEST_INVALID"
