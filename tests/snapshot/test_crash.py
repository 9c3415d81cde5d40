"""Crash safety: a snapshotter process killed with SIGKILL at each step of prepare and
remove leaves only garbage that cleanup() deletes, and never a snapshot that lies.

The child process runs the real snapshotter; the only thing injected is *where* it dies
(a hook that sends SIGKILL to itself, or that parks until the test kills it).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.errors import NotFound
from lamina.snapshot.base import DirSnapshotter
from lamina.snapshot.native import NativeSnapshotter
from lamina.snapshot.overlay import OverlaySnapshotter

Spawn = Callable[..., subprocess.Popen[str]]

CHILD = """
    import os, signal, sys, time
    from lamina.snapshot import base, fsutil, metadata
    from lamina.snapshot.native import NativeSnapshotter
    from lamina.snapshot.overlay import OverlaySnapshotter
    kind, root, step = sys.argv[1:4]
    cls = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}[kind]
    s = cls(root)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def park(original):
        def hook(*args, **kwargs):
            original(*args, **kwargs)
            print("parked", flush=True)
            time.sleep(3600)
        return hook

    if step == "fill":        # killed while the new snapshot's directory is being filled
        cls._fill = park(cls._fill)
    elif step == "copy":      # killed in the middle of a native copy (some files copied)
        fsutil.copy_data = park(fsutil.copy_data)
    elif step == "register":  # killed after the rename into place, before the metadata
        metadata.MetaFile._write = die
    elif step == "discard":   # killed after remove forgot it, before the directory went
        base.DirSnapshotter._discard = die
    if step == "discard":
        s.remove("victim")
    else:
        s.prepare("victim", "base")
    print("finished", flush=True)
"""


def _base(s: DirSnapshotter) -> None:
    s.prepare("k")
    upper = Path(s.upper_dir("k"))
    for i in range(20):
        (upper / f"f{i}").write_bytes(os.urandom(5000))
    s.commit("base", "k")


def _entries(s: DirSnapshotter) -> list[str]:
    return sorted(n for n in os.listdir(s.root) if not n.startswith("metadata."))


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        ("overlay", "fill"),
        ("native", "fill"),
        ("native", "copy"),
        ("overlay", "register"),
        ("native", "register"),
        ("overlay", "discard"),
        ("native", "discard"),
    ],
)
def test_kill_9_leaves_only_what_cleanup_removes(
    lamina_root: Path, spawn: Spawn, kind: str, step: str
) -> None:
    cls = {"overlay": OverlaySnapshotter, "native": NativeSnapshotter}[kind]
    s = cls(str(lamina_root))
    _base(s)
    if step == "discard":
        s.prepare("victim", "base")
    before = _entries(s)
    proc = spawn(CHILD, kind, str(lamina_root), step)
    if step in ("fill", "copy"):
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "parked", proc.stderr.read() if proc.stderr else ""
        # a live maker's directory is not garbage: cleanup must leave it alone
        tmp = [n for n in _entries(s) if n.startswith("tmp-")]
        assert len(tmp) == 1
        assert s.cleanup() == 0
        assert os.path.isdir(os.path.join(s.root, tmp[0]))
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the state never names a half-made snapshot, and never a half-removed one
    again = cls(str(lamina_root))
    with pytest.raises(NotFound):
        again.stat("victim")
    assert {i.name for i in again.walk()} == {"base"}
    garbage = sorted(set(_entries(again)) - set(before))
    if step == "discard":
        assert garbage == []  # the directory is still under its id, but nobody names it
        assert len([n for n in _entries(again) if n.isdigit()]) == 2
    else:
        assert len(garbage) == 1, garbage
        assert garbage[0].startswith("tmp-") if step != "register" else garbage[0].isdigit()
    assert again.cleanup() == 1
    assert again.cleanup() == 0
    assert len([n for n in _entries(again) if n.isdigit()]) == 1  # base alone
    assert [n for n in _entries(again) if n.startswith("tmp-")] == []
    # and the same key can be made again, with all of base's files
    again.prepare("victim", "base")
    if not again.overlay:
        assert len(os.listdir(again.upper_dir("victim"))) == 20


def test_cleanup_removes_a_dead_writers_metadata_temp(lamina_root: Path) -> None:
    s = OverlaySnapshotter(str(lamina_root))
    s.prepare("a")
    stray = Path(s.root, ".metadata.json.deadbeef")
    stray.write_bytes(b"{half")
    assert s.cleanup() == 0  # not a snapshot directory, but gone all the same
    assert not stray.exists()
    assert [i.name for i in s.walk()] == ["a"]


def test_damaged_metadata_is_a_clear_error(lamina_root: Path) -> None:
    from lamina.errors import InvalidFormat

    s = OverlaySnapshotter(str(lamina_root))
    s.prepare("a")
    Path(s.root, "metadata.json").write_text('{"schemaVersion": 1, "nextId": 2}')
    with pytest.raises(InvalidFormat, match="not valid snapshot metadata") as exc:
        s.stat("a")
    assert exc.value.hint
    Path(s.root, "metadata.json").write_text('{"schemaVersion": 7}')
    with pytest.raises(InvalidFormat, match="schemaVersion"):
        list(s.walk())
