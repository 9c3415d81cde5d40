"""`lamina run`'s fast path (lamina.runtime.plans.replay): a warm run replays the plan the
first full run cached, and behaves exactly like the full path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.cli import LAMINA, Lamina
from lamina.runtime.records.containers import Container
from lamina.snapshot.overlay import OverlaySnapshotter

pytestmark = [pytest.mark.root, pytest.mark.interop]

FAST = {"LAMINA_FASTRUN": "require"}
SLOW = {"LAMINA_FASTRUN": "0"}
PROBE = "hostname; id; pwd; env | sort; cat /etc/hostname; cat /etc/hosts | head -3; ls /"


def _own_name_out(out: str) -> str:
    """The probe's output with the container's own host name (its short id on the
    default bridge network, different in every container by nature) made generic."""
    name = out.split("\n", 1)[0]
    assert len(name) == 12, out
    return out.replace(name, "<hostname>")


@pytest.fixture
def bb(lamina: Lamina) -> Lamina:
    lamina("bootstrap", "busybox", "-t", "bb")
    return lamina


def _root(lamina: Lamina) -> Path:
    return Path(lamina.root)  # type: ignore[attr-defined]


def _mounts_under(root: Path) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(root))
    ]


def _mounted(root: Path) -> bool:
    return bool(_mounts_under(root))


def _plans(root: Path) -> list[Path]:
    return sorted((root / "cache" / "run").glob("*.json"))


def test_first_run_writes_a_plan_and_the_next_replays_it(bb: Lamina) -> None:
    root = _root(bb)
    missing = bb("run", "--rm", "bb", "true", env=FAST, check=False)
    assert missing.returncode != 0 and "no valid run plan" in missing.stderr
    assert _plans(root) == []
    slow = bb("run", "--rm", "bb", "sh", "-c", PROBE, env=SLOW)  # the full path plans
    assert len(_plans(root)) == 1
    fast = bb("run", "--rm", "bb", "sh", "-c", PROBE, env=FAST)
    again = bb("run", "--rm", "bb", "sh", "-c", PROBE, env=FAST)
    assert _own_name_out(fast.stdout) == _own_name_out(again.stdout) == _own_name_out(slow.stdout)
    assert "uid=0(root)" in fast.stdout
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    # A bridge run returns before netavark's teardown ends: its rootfs is unmounted at
    # once, at most its network namespace is still bound until the teardown finishes,
    # which the next network command waits for.
    netns = str(root / "runtime" / "netns")
    assert all(m.startswith(netns) for m in _mounts_under(root))
    bb("network", "inspect", "lamina")
    assert not _mounted(root)
    # only the image's own snapshots (layer + init) remain
    snap = OverlaySnapshotter(str(root))
    assert all(not info.name.startswith("container-") for info in snap.walk())


def test_exit_codes_and_command_rules(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")
    assert bb("run", "--rm", "bb", "sh", "-c", "exit 7", env=FAST, check=False).returncode == 7
    missing = bb("run", "--rm", "bb", "/no/such", env=FAST, check=False)
    assert missing.returncode == 127
    # an image with an ENTRYPOINT: args are appended to it, CMD is replaced
    bb(
        "import",
        "--change",
        'ENTRYPOINT ["echo", "ep"]',
        "--change",
        'CMD ["dflt"]',
        "-t",
        "ep",
        str(_busybox_dir(bb)),
    )
    assert bb("run", "--rm", "ep").stdout == "ep dflt\n"
    assert bb("run", "--rm", "ep", env=FAST).stdout == "ep dflt\n"
    assert bb("run", "--rm", "ep", "x", "y", env=FAST).stdout == "ep x y\n"


def _busybox_dir(lamina: Lamina) -> Path:
    out = _root(lamina).parent / "bbtree"
    if not out.exists():
        lamina("unpack", "bb", str(out))
    return out


def test_kept_container_is_a_normal_one(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")
    bb(
        "run",
        "--name",
        "kept",
        "bb",
        "sh",
        "-c",
        "echo hi > /new.txt; exit 3",
        env=FAST,
        check=False,
    )
    [rec] = json.loads(bb("ps", "-a", "--json").stdout)
    assert rec["name"] == "kept" and rec["status"] == "exited" and rec["exit_code"] == 3
    state = json.loads((_root(bb) / "containers" / rec["id"] / "state.json").read_text())
    assert Container.from_json(state).to_json() == state  # the full path's record format
    assert bb("diff", "kept").stdout.splitlines() == ["A /new.txt"]
    taken = bb("run", "--name", "kept", "bb", "true", env=FAST, check=False)
    assert taken.returncode != 0 and "already in use" in taken.stderr
    bb("rm", "kept")
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    assert not _mounted(_root(bb))


def test_plan_is_void_when_refs_or_snapshots_change(bb: Lamina) -> None:
    root = _root(bb)
    bb("run", "--rm", "bb", "true")
    bb("run", "--rm", "bb", "true", env=FAST)
    bb("tag", "bb", "other")  # refs.json changed: the plan no longer proves `bb`'s image
    stale = bb("run", "--rm", "bb", "true", env=FAST, check=False)
    assert stale.returncode != 0 and "no valid run plan" in stale.stderr
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    bb("run", "--rm", "bb", "true")  # the full path makes a new plan
    bb("run", "--rm", "bb", "true", env=FAST)
    # the init snapshot is gone and made again under another id: the chain check catches it
    snap = OverlaySnapshotter(str(root))
    init = next(i.name for i in snap.walk() if i.name.endswith("-init"))
    snap.remove(init)
    assert bb("run", "--rm", "bb", "true", env=FAST, check=False).returncode != 0
    assert bb("run", "--rm", "bb", "echo", "ok").stdout == "ok\n"  # falls back, works
    assert not any(i.name.startswith("container-") for i in snap.walk())


def test_options_beyond_the_plan_take_the_full_path(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")
    out = bb("run", "--rm", "-e", "X=1", "bb", "sh", "-c", "echo $X", env=FAST)
    assert out.stdout == "1\n"  # -e is not replayable: the full path ran (no error)


def test_seccomp_unconfined_has_its_own_plan(bb: Lamina) -> None:
    root = _root(bb)
    unconfined = ("--security-opt", "seccomp=unconfined")
    status = ("grep", "Seccomp:", "/proc/self/status")
    bb("run", "--rm", "bb", "true")
    missing = bb("run", "--rm", *unconfined, "bb", "true", env=FAST, check=False)
    assert missing.returncode != 0 and "no valid run plan" in missing.stderr
    assert bb("run", "--rm", *unconfined, "bb", *status).stdout.split() == ["Seccomp:", "0"]
    assert len(_plans(root)) == 2
    assert bb("run", "--rm", *unconfined, "bb", *status, env=FAST).stdout.split()[1] == "0"
    assert bb("run", "--rm", "bb", *status, env=FAST).stdout.split()[1] == "2"
    # other security options are not replayed: the full path runs them
    out = bb(
        "run", "--rm", "--cap-drop", "ALL", "bb", "grep", "CapEff", "/proc/self/status", env=FAST
    )
    assert out.stdout.split()[1] == "0" * 16


def test_signals_are_forwarded(bb: Lamina) -> None:
    bb("run", "--rm", "bb", "true")
    env = {**os.environ, **FAST}
    proc = subprocess.Popen(
        [
            *LAMINA,
            "--root",
            str(_root(bb)),
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 42
    assert "got-term" in proc.stdout.read()
    proc.stdout.close()
    assert json.loads(bb("ps", "-a", "--json").stdout) == []


def test_kill_9_mid_run_leaves_what_rm_cleans(bb: Lamina) -> None:
    root = _root(bb)
    bb("run", "--rm", "bb", "true")
    env = {**os.environ, **FAST}
    proc = subprocess.Popen(
        [*LAMINA, "--root", str(root), "run", "--rm", "--name", "victim", "bb", "sleep", "60"],
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _mounted(root):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    assert _mounted(root)
    bb("rm", "-f", "victim")
    assert not _mounted(root)
    assert json.loads(bb("ps", "-a", "--json").stdout) == []
    snap = OverlaySnapshotter(str(root))
    assert not any(i.name.startswith("container-") for i in snap.walk())
