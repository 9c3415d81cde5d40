"""The default parent policy: D2-2024 weights, the bad-node test, slot filtering."""

from __future__ import annotations

from lamina.p2p.api import HostInfo, PeerState, PeerView
from lamina.p2p.scheduling.policy import DefaultPolicy, affinity, is_bad_node


def view(
    pid: str,
    *,
    seed: bool = False,
    rack: str = "",
    held: int = 10,
    state: PeerState = PeerState.RUNNING,
    active: int = 0,
    ok: int = 0,
    failed: int = 0,
    costs: tuple[float, ...] = (),
    slots: int = 32,
) -> PeerView:
    return PeerView(
        pid,
        HostInfo(pid, f"http://{pid}:1", seed=seed, rack=rack, upload_slots=slots),
        state,
        held,
        100,
        active,
        ok,
        failed,
        costs,
    )


CHILD = view("child", rack="dc1|r1|x", held=0, state=PeerState.PENDING)


def test_bad_node_rules() -> None:
    assert not is_bad_node(())
    assert not is_bad_node((1.0, 1.0, 19.0))
    assert is_bad_node((1.0, 1.0, 21.0))
    steady = tuple(1.0 + 0.01 * (i % 3) for i in range(40))
    assert not is_bad_node((*steady, 1.02))
    assert is_bad_node((*steady, 1.5))  # far above mean + 3 sigma though < 20x


def test_affinity_counts_leading_labels() -> None:
    assert affinity("dc1|r1|x", "dc1|r1|y") == (1.0, 0.4)
    assert affinity("dc1|r1", "dc2|r1") == (0.0, 0.0)
    assert affinity("", "") == (0.0, 0.0)


def test_seed_preferred_while_first_download_runs_then_normal_peers() -> None:
    p = DefaultPolicy()
    running_seed = view("seed", seed=True, state=PeerState.BACK_TO_SOURCE)
    normal = view("n1")
    assert [v.peer_id for v in p.choose(CHILD, [normal, running_seed], 1)] == ["seed"]
    done_seed = view("seed", seed=True, state=PeerState.SUCCEEDED)
    assert [v.peer_id for v in p.choose(CHILD, [done_seed, normal], 1)] == ["n1"]


def test_rack_upload_success_and_slots_rank_and_filter() -> None:
    p = DefaultPolicy()
    near = view("near", rack="dc1|r1|z")
    far = view("far", rack="dc9")
    flaky = view("flaky", rack="dc1|r1|z", ok=1, failed=9)
    full = view("full", rack="dc1|r1|x", active=4, slots=4)
    slow = view("slow", rack="dc1|r1|x", costs=(1.0, 1.0, 50.0))
    got = [v.peer_id for v in p.choose(CHILD, [far, flaky, full, slow, near], 4)]
    assert got == ["near", "flaky", "far"]
    assert len(p.choose(CHILD, [view(f"p{i}") for i in range(10)], 4)) == 4
