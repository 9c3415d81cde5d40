"""The scheduler's JSON wire format: round trips, and bad input is InvalidArgument."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.errors import InvalidArgument
from lamina.p2p import wire
from lamina.p2p.api import HostInfo, Parent, PieceFailure, Report, Schedule

HEX = "0f" * 32


def test_round_trips() -> None:
    host = HostInfo("h1", "http://10.0.0.1:4001", seed=True, rack="a|b", upload_slots=8)
    assert wire.host_from_json(wire.host_to_json(host)) == host
    sched = Schedule(
        "parents", 1 << 30, 4 << 20, (Parent("p", "h", "http://x:1"),), 3, (HEX,), "t", 250, "r"
    )
    assert wire.schedule_from_json(json.loads(json.dumps(wire.schedule_to_json(sched)))) == sched
    rep = Report("p", (1, 2), 3, 0, (HEX,), (PieceFailure(1, "q", "corrupt"),), 5, 6)
    assert wire.report_from_json(wire.report_to_json(rep)) == rep
    reg = wire.Registration("p", "h", 10, "https://r/v2/x/blobs/sha256:" + "a" * 64)
    assert wire.registration_from_json(wire.registration_to_json(reg)) == reg
    fin = wire.Finish("p", "back_to_source_failed", "502")
    assert wire.finish_from_json(wire.finish_to_json(fin)) == fin


@pytest.mark.parametrize(
    ("parse", "value", "match"),
    [
        (wire.host_from_json, [], "JSON object"),
        (wire.host_from_json, {"addr": "http://x"}, "'host_id' is missing"),
        (wire.host_from_json, {"host_id": "h", "addr": "ftp://x"}, "http"),
        (wire.host_from_json, {"host_id": "h", "addr": "http://x", "upload_slots": 0}, "slots"),
        (wire.host_from_json, {"host_id": "h", "addr": "http://x", "seed": 1}, "true or false"),
        (wire.report_from_json, {"peer_id": "p", "done": [True]}, "piece number"),
        (wire.report_from_json, {"peer_id": "p", "done": [-1]}, "piece number"),
        (wire.report_from_json, {"peer_id": "p", "source_digests": ["AB"]}, "hex"),
        (wire.report_from_json, {"peer_id": "p", "failed": [{"piece": 1}]}, "missing"),
        (
            wire.report_from_json,
            {"peer_id": "p", "failed": [{"piece": 1, "parent_id": "q", "reason": "meh"}]},
            "reason",
        ),
        (wire.report_from_json, {"peer_id": ""}, "non-empty"),
        (wire.report_from_json, {"peer_id": "p", "bytes_from_peers": -1}, "outside"),
        (wire.schedule_from_json, {"action": "fly", "size": 1, "piece_length": 1}, "action"),
        (wire.registration_from_json, {"peer_id": "p", "host_id": "h"}, "'size' is missing"),
        (wire.finish_from_json, {"peer_id": "p", "outcome": "won"}, "outcome"),
        (wire.leave_from_json, {"peer": "p"}, "missing"),
    ],
)
def test_bad_input_names_the_field(parse, value, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=match):
        parse(value)


def test_task_ids_and_json() -> None:
    assert wire.check_task("sha256:" + "a" * 64)
    for bad in ["sha256:" + "A" * 64, "sha512:" + "a" * 64, "sha256:../x", ""]:
        with pytest.raises(InvalidArgument):
            wire.check_task(bad)
    with pytest.raises(InvalidArgument, match="not JSON"):
        wire.parse(b"\xff{")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "peer_id",
        "host_id",
        "addr",
        "done",
        "failed",
        "source_digests",
        "size",
        "action",
        "piece_length",
        "parents",
        "outcome",
        "digests",
        "upload_slots",
        "seed",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=8) | _json)
def test_any_json_is_a_value_or_invalid_argument(value: object) -> None:
    for parse in (
        wire.host_from_json,
        wire.report_from_json,
        wire.schedule_from_json,
        wire.registration_from_json,
        wire.finish_from_json,
        wire.leave_from_json,
    ):
        with contextlib.suppress(InvalidArgument):
            parse(value)
