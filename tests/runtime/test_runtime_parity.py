"""The fast path (lamina.runtime.plans.replay) and the full path
(lamina.runtime.run.run_container) make the same container for the same inputs: the
same bundle (config.json, modulo the container id), the same mounts, the same records
(containers/<id>/state.json, exit.json, the init files, the snapshot metadata).

Both are run through the CLI on one image with one command; the full path is forced
with LAMINA_FASTRUN=0, the replay with LAMINA_FASTRUN=require (an error if it did not
replay).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import Lamina
from lamina.snapshot.metadata import MetaFile
from lamina.snapshot.mountinfo import mountinfo
from lamina.snapshot.overlay import OverlaySnapshotter
from lamina.stateroot import STATE_FILE, container_dir, container_key, snapshots_dir

pytestmark = [pytest.mark.root, pytest.mark.interop]

FAST = {"LAMINA_FASTRUN": "require"}
FULL = {"LAMINA_FASTRUN": "0"}
ID = "<id>"
# What differs between two containers by nature: when they ran and which processes kept them.
TIMES = ("created", "started", "finished", "keeper_start", "name")


def _root(lamina: Lamina) -> Path:
    return Path(lamina.root)  # type: ignore[attr-defined]


def _run_kept(
    lamina: Lamina, env: dict[str, str], *args: str, options: tuple[str, ...] = ()
) -> str:
    """Run ``bb args`` (after the run ``options``) without --rm and return the new
    container's id."""
    before = {c["id"] for c in json.loads(lamina("ps", "-a", "--json").stdout)}
    lamina("run", *options, "bb", *args, env=env, check=False)
    [cid] = {c["id"] for c in json.loads(lamina("ps", "-a", "--json").stdout)} - before
    return str(cid)


def _files(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below ``directory``: its mode, and the bytes of small regular files
    other than the runtime's own log and the bundle's pid file."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for top, dirs, names in os.walk(directory):
        if top == str(directory):
            dirs.remove("rootfs")  # the mounted root: compared as a mount below
            out["rootfs"] = (os.lstat(os.path.join(top, "rootfs")).st_mode, None)
        for name in [*dirs, *names]:
            path = Path(top) / name
            rel = str(path.relative_to(directory))
            data = None
            if path.is_file() and rel not in ("runtime.log", "bundle/pid"):
                data = path.read_bytes()
            out[rel] = (path.lstat().st_mode, data)
    return out


def _same_but_id(text: bytes | None, cid: str) -> Any:
    # On the default bridge network the short id is the host name (as with Docker), so
    # it is in hostname, hosts and HOSTNAME: a difference by nature, like the id.
    return None if text is None else text.decode().replace(cid, ID).replace(cid[:12], "<short>")


def _mount_of(path: str, snaps: str, upper_sid: int) -> tuple[str, str, list[str]]:
    [m] = [m for m in mountinfo() if m.mount_point == path]
    own = os.path.join(snaps, str(upper_sid))
    options = [o.replace(own + "/", "<own>/") for o in m.super_options.split(",")]
    return m.fstype, m.options, options


def _record(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    return {
        k: (v.replace(cid, ID) if isinstance(v, str) else v)
        for k, v in doc.items()
        if k not in TIMES
    }


@pytest.mark.parametrize("options", [(), ("--security-opt", "seccomp=unconfined")])
def test_the_fast_path_makes_what_the_full_path_makes(
    lamina: Lamina, options: tuple[str, ...]
) -> None:
    lamina("bootstrap", "busybox", "-t", "bb")
    root = _root(lamina)
    lamina("run", "--rm", *options, "bb", "true", env=FULL)  # the full path writes the plan
    command = ("sh", "-c", "echo out; exit 3")
    full = _run_kept(lamina, FULL, *command, options=options)
    fast = _run_kept(lamina, FAST, *command, options=options)
    try:
        # the bundle, the init files, the exit file: byte for byte but the id (the
        # formats may differ: compared as JSON where they are JSON)
        fdir = Path(container_dir(str(root), full))
        qdir = Path(container_dir(str(root), fast))
        ffiles, qfiles = _files(fdir), _files(qdir)
        assert ffiles.keys() == qfiles.keys()
        for rel, (mode, data) in ffiles.items():
            qmode, qdata = qfiles[rel]
            assert mode == qmode, rel
            if rel.endswith(".json"):
                assert data is not None and qdata is not None
                fdoc = json.loads(_same_but_id(data, full))
                qdoc = json.loads(_same_but_id(qdata, fast))
                if rel == STATE_FILE:
                    fdoc, qdoc = _record(fdoc, full), _record(qdoc, fast)
                elif rel == "exit.json":
                    fdoc.pop("finished"), qdoc.pop("finished")
                assert fdoc == qdoc, rel
            else:
                assert _same_but_id(data, full) == _same_but_id(qdata, fast), rel
        config = json.loads((fdir / "bundle" / "config.json").read_text())
        assert config["process"]["args"] == list(command)
        # each option set replays its own plan: the default filter, or none
        assert ("seccomp" in config["linux"]) == (not options)

        # the snapshot records: an active snapshot on the image's init snapshot each
        snaps = snapshots_dir(str(root))
        state = MetaFile(snaps).read()  # the fast path's writes parse as the full path's
        frec = state.records[container_key(full)]
        qrec = state.records[container_key(fast)]
        assert (frec.kind, frec.parent, dict(frec.labels)) == (
            qrec.kind,
            qrec.parent,
            dict(qrec.labels),
        )
        assert frec.parent is not None and frec.parent.endswith("-init")
        snap = OverlaySnapshotter(str(root))
        assert snap.parents(container_key(full)) == snap.parents(container_key(fast))
        for sid in (frec.id, qrec.id):
            own = Path(snaps) / str(sid)
            assert (own / "fs").stat().st_mode & 0o7777 == 0o755
            assert (own / "work").stat().st_mode & 0o7777 == 0o700

        # the mounts: one overlay on each rootfs, the same lower dirs and options
        fmount = _mount_of(str(fdir / "rootfs"), snaps, frec.id)
        qmount = _mount_of(str(qdir / "rootfs"), snaps, qrec.id)
        assert fmount == qmount
        assert fmount[0] == "overlay"
        assert "upperdir=<own>/fs" in fmount[2] and "workdir=<own>/work" in fmount[2]
    finally:
        lamina("rm", "-f", full, fast)


def test_with_rm_both_paths_mount_the_same_volatile_root(lamina: Lamina) -> None:
    lamina("bootstrap", "busybox", "-t", "bb")
    lamina("run", "--rm", "bb", "true", env=FULL)
    probe = ("cat", "/proc/self/mountinfo")

    def root_mount(env: dict[str, str]) -> list[str]:
        out = lamina("run", "--rm", "bb", *probe, env=env).stdout
        [line] = [x for x in out.splitlines() if x.split()[4] == "/"]
        super_options = line.split(" - ", 1)[1].split()[2]
        # the container's own upper and work dirs: snapshots/<its id>/...
        own = re.compile(r"^((?:upperdir|workdir)=.*/snapshots/)\d+/")
        return [own.sub(r"\1<own>/", o) for o in super_options.split(",")]

    full, fast = root_mount(FULL), root_mount(FAST)
    assert full == fast
    assert "volatile" in full or "fsync=volatile" in full  # as the kernel shows it
    assert json.loads(lamina("ps", "-a", "--json").stdout) == []
