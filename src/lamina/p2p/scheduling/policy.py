"""The default parent-selection policy: Dragonfly's D2-2024 evaluator (research §1.4).

Each term is in [0, 1] and weighted: pieces held 0.20, the parent host's upload
success rate 0.20, free upload slots 0.15, host type 0.15 (a seed while it is still
fetching the first copy 1.0, a seed afterwards 0, a normal peer 0.5: everyone is sent
to the seed while it runs, to each other once the blob is out), same IDC 0.15, and the
share of leading ``rack`` labels in common 0.15. Candidates with no free upload slot
and *bad nodes* (the last piece cost far above the earlier ones) are dropped first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lamina.p2p.api import PeerState, PeerView

W_PIECES = 0.20
W_UPLOAD_OK = 0.20
W_FREE_SLOTS = 0.15
W_HOST_TYPE = 0.15
W_IDC = 0.15
W_LOCATION = 0.15
LOCATION_LABELS = 5
"""Dragonfly compares at most five labels (``idc|zone|rack|row|host``)."""
FEW_SAMPLES = 30
SLOW_FACTOR = 20.0


def is_bad_node(costs: Sequence[float]) -> bool:
    """Whether the last piece took abnormally long: with fewer than 30 samples, over
    20x the mean of the earlier ones; with 30 or more, over mean + 3 sigma."""
    if len(costs) < 2:
        return False
    *earlier, last = costs
    mean = sum(earlier) / len(earlier)
    if len(costs) < FEW_SAMPLES:
        return last > SLOW_FACTOR * mean
    var = sum((c - mean) ** 2 for c in earlier) / len(earlier)
    return last > mean + 3 * math.sqrt(var)


def _labels(rack: str) -> list[str]:
    return rack.split("|")[:LOCATION_LABELS] if rack else []


def affinity(a: str, b: str) -> tuple[float, float]:
    """``(idc, location)``: 1 if the first labels match; the share of leading labels in
    common out of five."""
    la, lb = _labels(a), _labels(b)
    common = 0
    for x, y in zip(la, lb, strict=False):
        if x != y or not x:
            break
        common += 1
    return (1.0 if common else 0.0), common / LOCATION_LABELS


def host_type(view: PeerView) -> float:
    if not view.host.seed:
        return 0.5
    return 1.0 if view.state in (PeerState.RUNNING, PeerState.BACK_TO_SOURCE) else 0.0


def score(child: PeerView, cand: PeerView) -> float:
    total = cand.piece_total or 1
    uploads = cand.upload_ok + cand.upload_failed
    ok_rate = cand.upload_ok / uploads if uploads else 1.0
    slots = cand.host.upload_slots
    free = max(slots - cand.uploads_active, 0) / slots
    idc, location = affinity(child.host.rack, cand.host.rack)
    return (
        W_PIECES * cand.pieces_held / total
        + W_UPLOAD_OK * ok_rate
        + W_FREE_SLOTS * free
        + W_HOST_TYPE * host_type(cand)
        + W_IDC * idc
        + W_LOCATION * location
    )


class DefaultPolicy:
    """:class:`lamina.p2p.api.ParentPolicy` with the D2-2024 weights."""

    def choose(self, child: PeerView, candidates: Sequence[PeerView], limit: int) -> list[PeerView]:
        usable = [
            c
            for c in candidates
            if c.uploads_active < c.host.upload_slots and not is_bad_node(c.piece_costs)
        ]
        usable.sort(key=lambda c: score(child, c), reverse=True)
        return usable[:limit]
