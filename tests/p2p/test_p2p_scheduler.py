"""The pure scheduler: event sequences with a fake clock, no sockets."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.errors import Conflict, InvalidArgument, NotFound
from lamina.p2p import tokens
from lamina.p2p.api import HOST_TTL, HostInfo, PeerState, PieceFailure, Report, TaskState
from lamina.p2p.pieces import piece_count
from lamina.p2p.scheduling.fsm import IllegalTransition, peer_move, task_move
from lamina.p2p.scheduling.records import task_from_dict, task_to_dict
from lamina.p2p.scheduling.scheduler import RETRY_BTS, Scheduler, UnknownHost

KEY = b"k" * 32
TASK = "sha256:" + "ab" * 32
SIZE = 64 << 20  # 16 pieces of 4 MiB
PIECES = piece_count(SIZE)
SRC = "http://origin.invalid/v2/x/blobs/" + TASK
DIGESTS = tuple(hashlib.sha256(str(i).encode()).hexdigest() for i in range(PIECES))


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def make(limit: int = 1) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    return Scheduler(clock, KEY, back_to_source_limit=limit, rng=random.Random(7)), clock


def host(s: Scheduler, n: int, *, seed: bool = False, rack: str = "") -> str:
    hid = f"h{n}"
    s.announce_host(HostInfo(hid, f"http://127.0.0.{n}:4001", seed=seed, rack=rack))
    return hid


def reg(s: Scheduler, n: int, **kw: bool) -> tuple[str, str]:
    hid = host(s, n, **kw)
    pid = f"{hid}/{TASK}"
    return pid, s.register(TASK, pid, hid, SIZE, SRC).schedule.action


def source_report(s: Scheduler, pid: str, upto: int) -> None:
    s.report(
        TASK,
        Report(pid, done=tuple(range(upto)), source_digests=DIGESTS[:upto]),
    )


def test_first_peer_goes_back_to_source_and_others_get_it_as_parent() -> None:
    s, _ = make()
    p1, a1 = reg(s, 1)
    assert a1 == "back_to_source"
    p2, _ = reg(s, 2)
    sched = s.report(TASK, Report(p2)).schedule
    # the running back-to-source peer serves while it downloads
    assert sched.action == "parents"
    assert [p.peer_id for p in sched.parents] == [p1]
    assert sched.parents[0].addr == "http://127.0.0.1:4001"
    assert tokens.check(KEY, TASK, sched.token, 1000.0)
    assert s.tasks[TASK].state is TaskState.RUNNING


def test_digests_flow_to_children_from_where_they_stand() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    source_report(s, p1, 5)
    p2, _ = reg(s, 2)
    sched = s.report(TASK, Report(p2, digests_known=2)).schedule
    assert sched.digests_from == 2
    assert sched.digests == DIGESTS[2:5]


def test_digests_only_from_back_to_source_and_in_order() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    p2, _ = reg(s, 2)
    with pytest.raises(InvalidArgument, match="not back to source"):
        s.report(TASK, Report(p2, source_digests=DIGESTS[:1]))
    with pytest.raises(InvalidArgument, match="piece order"):
        s.report(TASK, Report(p1, source_digests_from=3, source_digests=DIGESTS[3:4]))
    source_report(s, p1, 2)
    with pytest.raises(Conflict, match="other than"):
        s.report(TASK, Report(p1, source_digests_from=1, source_digests=(DIGESTS[5],)))
    # a piece without a known digest cannot be done
    with pytest.raises(InvalidArgument, match="digests are known"):
        s.report(TASK, Report(p2, done=(4,)))


def test_seed_host_is_triggered_first() -> None:
    s, _ = make()
    host(s, 9, seed=True)
    p1, _ = reg(s, 1)
    d = s.register(TASK, p1, "h1", SIZE, SRC)  # idempotent repeat
    assert d.schedule.action == "wait"
    first = s.tasks[TASK]
    assert first.seed_pending == "h9"
    # the seed registers and takes the slot
    seed_pid = f"h9/{TASK}"
    assert s.register(TASK, seed_pid, "h9", SIZE, SRC).schedule.action == "back_to_source"
    source_report(s, seed_pid, 1)
    sched = s.report(TASK, Report(p1)).schedule
    assert sched.action == "parents" and sched.parents[0].peer_id == seed_pid


def test_seed_trigger_carries_the_host_and_source() -> None:
    s, _ = make()
    host(s, 9, seed=True)
    hid = host(s, 1)
    d = s.register(TASK, f"{hid}/{TASK}", hid, SIZE, SRC)
    assert d.seed is not None
    assert d.seed.host.host_id == "h9" and d.seed.source == SRC and d.seed.size == SIZE


def test_failed_seed_trigger_frees_the_slot() -> None:
    s, _ = make()
    host(s, 9, seed=True)
    p1, a1 = reg(s, 1)
    assert a1 == "wait"
    s.seed_failed(TASK, "h9")
    # the seed is still alive, so it is asked again; drop it and the peer goes itself
    s.drop_host("h9")
    assert s.report(TASK, Report(p1)).schedule.action == "back_to_source"


def test_back_to_source_cap_is_respected() -> None:
    s, clock = make(limit=2)
    _p1, a1 = reg(s, 1)
    assert a1 == "back_to_source"
    actions = [reg(s, n)[1] for n in range(2, 6)]
    assert "back_to_source" not in actions[:1]
    # waiting peers with nothing to fetch go to source only after RETRY_BTS rounds,
    # and never past the cap
    for _ in range(RETRY_BTS + 2):
        clock.t += 0.5
        for n in range(2, 6):
            s.report(TASK, Report(f"h{n}/{TASK}"))
    assert len(s.tasks[TASK].bts) <= 2
    assert sum(p.state is PeerState.BACK_TO_SOURCE for p in s.tasks[TASK].peers.values()) <= 2


def test_wait_when_cap_reached_and_nothing_held() -> None:
    s, _ = make()
    reg(s, 1)
    # the back-to-source peer's host dies: its slot frees, the next peer goes itself
    s.drop_host("h1")
    _, a2 = reg(s, 2)
    assert a2 == "back_to_source"


def test_never_the_child_itself_nor_a_parent_on_its_host() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    source_report(s, p1, PIECES)
    hid = "h1"
    other = f"{hid}/other"
    s.register(TASK, other, hid, SIZE, SRC)
    sched = s.report(TASK, Report(other)).schedule
    assert sched.action == "wait"
    assert all(p.host_id != hid for p in sched.parents)


def test_mutual_exchange_between_running_peers() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    source_report(s, p1, 4)
    p2, _ = reg(s, 2)
    p3, _ = reg(s, 3)
    s.report(TASK, Report(p2, done=(0,)))
    s.report(TASK, Report(p3, done=(1,)))
    parents2 = {p.peer_id for p in s.report(TASK, Report(p2)).schedule.parents}
    parents3 = {p.peer_id for p in s.report(TASK, Report(p3)).schedule.parents}
    assert p3 in parents2 and p2 in parents3


def test_failure_blocklists_for_the_child_and_corrupt_for_the_task() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    source_report(s, p1, 4)
    p2, _ = reg(s, 2)
    s.report(TASK, Report(p2, done=(0, 1)))
    p3, _ = reg(s, 3)
    p4, _ = reg(s, 4)
    sched = s.report(TASK, Report(p3, failed=(PieceFailure(0, p2, "timeout"),))).schedule
    assert p2 not in {p.peer_id for p in sched.parents}
    assert p2 in {p.peer_id for p in s.report(TASK, Report(p4)).schedule.parents}
    assert s.hosts["h2"].upload_failed == 1
    s.report(TASK, Report(p4, failed=(PieceFailure(1, p2, "corrupt"),)))
    p5, _ = reg(s, 5)
    assert p2 not in {p.peer_id for p in s.report(TASK, Report(p5)).schedule.parents}
    assert p2 not in {p.peer_id for p in s.report(TASK, Report(p4)).schedule.parents}
    assert s.hosts["h2"].upload_failed == 2


def test_dead_host_expiry_removes_its_peers_and_frees_back_to_source() -> None:
    s, clock = make()
    p1, _ = reg(s, 1)
    p2, _ = reg(s, 2)
    clock.t += HOST_TTL / 2
    host(s, 2)  # heartbeat of h2 only
    clock.t += HOST_TTL / 2 + 1
    assert s.expire_hosts() == ["h1"]
    assert p1 not in s.tasks[TASK].peers
    assert s.tasks[TASK].bts == []
    assert s.report(TASK, Report(p2)).schedule.action == "back_to_source"
    with pytest.raises(UnknownHost):
        s.register(TASK, p1, "h1", SIZE, SRC)


def test_register_checks_size_and_host() -> None:
    s, _ = make()
    reg(s, 1)
    host(s, 2)
    with pytest.raises(Conflict, match="bytes"):
        s.register(TASK, "h2/x", "h2", SIZE + 1, SRC)
    with pytest.raises(UnknownHost):
        s.register(TASK, "h7/x", "h7", SIZE, SRC)
    with pytest.raises(NotFound):
        s.report(TASK, Report("nobody"))


def test_finish_and_leave_lifecycle() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    with pytest.raises(InvalidArgument, match="digests are known"):
        s.finish(TASK, p1, "succeeded")
    source_report(s, p1, PIECES)
    s.finish(TASK, p1, "succeeded")
    s.finish(TASK, p1, "succeeded")  # repeated: no-op
    assert s.tasks[TASK].state is TaskState.SUCCEEDED
    with pytest.raises(IllegalTransition):
        s.finish(TASK, p1, "failed")
    p2, a2 = reg(s, 2)
    assert a2 == "parents"
    assert s.report(TASK, Report(p2)).schedule.parents[0].peer_id == p1
    s.leave(TASK, p1)
    s.leave(TASK, p2)
    s.leave(TASK, p2)
    assert TASK not in s.tasks


def test_every_back_to_source_failing_fails_the_task_and_a_registration_restarts_it() -> None:
    s, _ = make()
    for n in range(1, 4):
        pid, action = reg(s, n)
        assert action == "back_to_source"
        s.finish(TASK, pid, "back_to_source_failed", "origin 500")
    assert s.tasks[TASK].state is TaskState.FAILED
    _, action = reg(s, 4)
    assert action == "back_to_source"
    assert s.tasks[TASK].state is TaskState.RUNNING


def test_fsm_refuses_illegal_moves() -> None:
    with pytest.raises(IllegalTransition):
        peer_move(PeerState.SUCCEEDED, PeerState.RUNNING)
    with pytest.raises(IllegalTransition):
        peer_move(PeerState.LEFT, PeerState.PENDING)
    with pytest.raises(IllegalTransition):
        task_move(TaskState.PENDING, TaskState.SUCCEEDED)
    assert peer_move(PeerState.PENDING, PeerState.BACK_TO_SOURCE) is PeerState.BACK_TO_SOURCE


def test_limit_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        Scheduler(FakeClock(), KEY, back_to_source_limit=4)


def test_task_record_round_trips() -> None:
    s, _ = make()
    p1, _ = reg(s, 1)
    source_report(s, p1, 3)
    p2, _ = reg(s, 2)
    s.report(TASK, Report(p2, done=(1,), failed=(PieceFailure(0, p1, "error"),)))
    rec = s.tasks[TASK]
    again = task_from_dict(task_to_dict(rec))
    assert task_to_dict(again) == task_to_dict(rec)
    assert again.peers[p2].bits == 0b10


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reg", "report", "finish", "fail", "leave", "tick"]), st.integers(1, 6)
        ),
        max_size=60,
    ),
    st.integers(1, 3),
)
def test_invariants_under_any_event_sequence(events: list[tuple[str, int]], limit: int) -> None:
    s, clock = make(limit)
    for kind, n in events:
        pid = f"h{n}/{TASK}"
        try:
            if kind == "reg":
                reg(s, n)
            elif kind == "report":
                rec = s.tasks.get(TASK)
                known = rec.digests_known if rec else 0
                peer = rec.peers.get(pid) if rec else None
                if peer is not None and peer.state is PeerState.BACK_TO_SOURCE:
                    up = min(known + 3, PIECES)
                    s.report(
                        TASK,
                        Report(
                            pid,
                            done=tuple(range(up)),
                            source_digests_from=known,
                            source_digests=DIGESTS[known:up],
                        ),
                    )
                else:
                    s.report(TASK, Report(pid, done=tuple(range(min(known, n)))))
            elif kind == "finish":
                s.finish(TASK, pid, "succeeded")
            elif kind == "fail":
                s.finish(TASK, pid, "back_to_source_failed")
            elif kind == "leave":
                s.leave(TASK, pid)
            else:
                clock.t += 7
                s.expire_hosts()
        except (InvalidArgument, NotFound, Conflict):
            pass
        rec = s.tasks.get(TASK)
        if rec is None:
            continue
        bts = [p for p in rec.peers.values() if p.state is PeerState.BACK_TO_SOURCE]
        assert len(bts) == len(rec.bts) <= limit
        assert all(rec.peers[h].pos == i for i, h in enumerate(rec.holders))
        for p in rec.peers.values():
            assert p.peer_id not in p.parents
            assert all(rec.peers[q].host_id != p.host_id for q in p.parents if q in rec.peers)
            assert p.held == p.bits.bit_count() <= rec.count
            assert p.children == sum(p.peer_id in c.parents for c in rec.peers.values())
