"""LocalStore across processes: killed ingests, racing ingests, racing ref updates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store import LocalStore

MiB = 1 << 20
Proc = subprocess.Popen[str]
Spawn = Callable[..., Proc]


def _ready(proc: Proc, want: str = "ready") -> str:
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline().strip()
    assert line.startswith(want), (line, proc.stderr.read())
    return line


def _finish(proc: Proc, stdin: str | None = None, timeout: float = 20) -> str:
    out, err = proc.communicate(stdin, timeout=timeout)
    assert proc.returncode == 0, err
    return out


KILLED_WRITER = """
    import os, sys
    from lamina.store import LocalStore
    store = LocalStore(sys.argv[1])
    w = store.writer()
    chunk = os.urandom(1 << 20)
    for i in range(100_000):
        w.write(chunk)
        if i == 16:
            print("writing", flush=True)
"""


def test_killed_ingest_leaves_no_blob_and_gc_sweeps_it(
    store: LocalStore, root: Path, spawn: Spawn
) -> None:
    proc = spawn(KILLED_WRITER, str(root))
    _ready(proc, "writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    temps = list((root / "ingest").iterdir())
    assert len(temps) == 1 and temps[0].stat().st_size >= 16 * MiB
    assert list(store.iter_blobs()) == []
    # The dead writer's lease died with it, so gc does not wait; its temp file is unlocked.
    result = store.gc(dry_run=True, timeout=5)
    assert result.removed_temp_files == 1 and temps[0].exists()
    result = store.gc(timeout=5)
    assert result.removed_temp_files == 1
    assert list((root / "ingest").iterdir()) == []
    info = store.put_bytes(b"after the crash")
    assert store.read_blob(info.digest) == b"after the crash"


HOLD_TEMP_LOCK = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_gc_keeps_a_temp_file_locked_by_a_live_writer(
    store: LocalStore, root: Path, spawn: Spawn
) -> None:
    temp = root / "ingest" / "live.tmp"
    proc = spawn(HOLD_TEMP_LOCK, str(temp))
    _ready(proc)
    assert store.gc(timeout=5).removed_temp_files == 0
    assert temp.exists()
    _finish(proc, "done\n")
    assert store.gc(timeout=5).removed_temp_files == 1
    assert not temp.exists()


SAME_BLOB = """
    import os, sys, time
    from lamina.oci.digest import Digest
    from lamina.store import LocalStore
    root, src, digest, size, go = sys.argv[1:]
    store = LocalStore(root)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    with open(src, "rb") as f:
        info = store.ingest(f, Digest.parse(digest), int(size))
    print(info.digest, info.size, flush=True)
"""


def test_eight_processes_ingest_the_same_blob(
    store: LocalStore, root: Path, tmp_path: Path, spawn: Spawn
) -> None:
    data = os.urandom(8 * MiB)
    digest = Digest.from_bytes(data)
    src = tmp_path / "src"
    src.write_bytes(data)
    go = tmp_path / "go"
    args = (str(root), str(src), str(digest), str(len(data)), str(go))
    procs = [spawn(SAME_BLOB, *args) for _ in range(8)]
    for proc in procs:
        _ready(proc)
    go.touch()
    for proc in procs:
        assert _finish(proc).split() == [str(digest), str(len(data))]
    assert [b.digest for b in store.iter_blobs()] == [digest]
    assert store.read_blob(digest, len(data)) == data
    assert list((root / "ingest").iterdir()) == []


SET_REFS = """
    import os, sys, time
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.digest import Digest
    from lamina.store import LocalStore
    root, worker, go = sys.argv[1:]
    store = LocalStore(root)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(50):
        name = f"example.com/w{worker}/img:{i}"
        digest = Digest.from_bytes(name.encode())
        store.set_ref(name, Descriptor("application/vnd.oci.image.manifest.v1+json", digest, i))
"""


def test_concurrent_ref_updates_lose_nothing(
    store: LocalStore, root: Path, tmp_path: Path, spawn: Spawn
) -> None:
    go = tmp_path / "go"
    procs = [spawn(SET_REFS, str(root), str(w), str(go)) for w in range(8)]
    for proc in procs:
        _ready(proc)
    go.touch()
    for proc in procs:
        _finish(proc)
    refs = store.list_refs()
    assert len(refs) == 400
    for w in range(8):
        for i in range(50):
            name = f"example.com/w{w}/img:{i}"
            assert refs[name].digest == Digest.from_bytes(name.encode())
            assert refs[name].size == i
    assert not (root / "refs.json.tmp").exists()


HAMMER_REFS = """
    import sys
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.digest import Digest
    from lamina.store import LocalStore
    store = LocalStore(sys.argv[1])
    print("ready", flush=True)
    n = 0
    import select
    while not select.select([sys.stdin], [], [], 0)[0]:
        name = f"hammer/{n % 50}"
        digest = Digest.from_bytes(str(n).encode())
        store.set_ref(name, Descriptor("application/vnd.oci.image.index.v1+json", digest, n))
        n += 1
    print(n, flush=True)
"""


def test_readers_never_see_a_torn_ref_index(store: LocalStore, root: Path, spawn: Spawn) -> None:
    # An index of ~100 refs makes a torn write likely to be seen if writes were in place.
    base = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.from_bytes(b"x"), 1)
    doc = {"schemaVersion": 1, "refs": {f"pre/{i}": base.to_json() for i in range(50)}}
    (root / "refs.json").write_text(json.dumps(doc))
    assert len(store.list_refs()) == 50
    proc = spawn(HAMMER_REFS, str(root))
    _ready(proc)
    seen_versions: set[int] = set()  # the newest update number each read saw
    deadline = time.monotonic() + 15
    reads = 0
    while reads < 1000 or (len(seen_versions) < 10 and time.monotonic() < deadline):
        refs = store.list_refs()  # raises InvalidFormat on a torn file
        assert len(refs) >= 50
        hammered = [d.size for name, d in refs.items() if name.startswith("hammer/")]
        if hammered:
            seen_versions.add(max(hammered))
        reads += 1
    updates = int(_finish(proc, "stop\n").split()[0])
    assert len(seen_versions) >= 10  # the reads really overlapped the updates
    assert len(store.list_refs()) == 50 + min(updates, 50)
