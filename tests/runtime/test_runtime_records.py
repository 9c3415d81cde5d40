"""Container records, names, init files and the runtime lookup (no container is run)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lamina.errors import AlreadyExists, Conflict, InvalidArgument, InvalidFormat, NotFound
from lamina.runtime.bundle.initlayer import (
    filter_resolv_conf,
    hosts_content,
    make_placeholders,
    resolv_conf_content,
    write_init_files,
)
from lamina.runtime.driver.process import exit_code_for
from lamina.runtime.driver.runc import cgroup_layout, find_binary, select_runtime
from lamina.runtime.lifecycle import parse_signal, refresh
from lamina.runtime.records.containers import (
    ADJECTIVES,
    NOUNS,
    Container,
    ContainerStore,
    human_duration,
    random_name,
    status_text,
)


def new(store: ContainerStore, name: str | None = None) -> Container:
    return store.create(image_ref="img:1", image_id="sha256:" + "2" * 64, runtime="runc", name=name)


def test_create_and_read_back(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    c = new(store, "web")
    assert len(c.id) == 64 and c.status == "created"
    assert c.rootfs == store.path(c.id, "rootfs") and os.path.isdir(c.rootfs)
    assert os.stat(store.path(c.id)).st_mode & 0o777 == 0o700
    again = ContainerStore(str(tmp_path)).get("web")  # another lamina process
    assert again == c
    with open(store.path(c.id, "state.json")) as f:
        assert json.load(f)["name"] == "web"
    updated = store.update(c.id, snapshot_key="k1")
    assert store.get(c.id).snapshot_key == "k1" == updated.snapshot_key


def test_names(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    new(store, "web")
    with pytest.raises(AlreadyExists, match="already in use"):
        new(store, "web")
    for bad in ("", "-x", "a b", "a/b", "x" * 129, "é"):
        with pytest.raises(InvalidArgument, match="invalid container name"):
            new(store, bad)
    name = new(store).name
    adjective, noun = name.split("_")
    assert adjective in ADJECTIVES and noun in NOUNS
    taken = {f"{a}_{n}" for a in ADJECTIVES for n in NOUNS}
    assert random_name(taken) not in taken  # a crowded namespace still gets a name


def test_names_are_unique_under_concurrency(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    results: list[str] = []

    def worker() -> None:
        try:
            results.append(new(ContainerStore(str(tmp_path)), "same").id)
        except AlreadyExists:
            results.append("taken")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("taken") == 5
    assert [c.name for c in store.list()] == ["same"]


def test_lookup(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    cs = [new(store) for _ in range(20)]
    target = cs[0]
    assert store.get(target.id) == target
    assert store.get(target.name) == target
    prefix = next(n for n in range(1, 64) if sum(c.id.startswith(target.id[:n]) for c in cs) == 1)
    assert store.get(target.id[:prefix]) == target
    # a one-digit prefix shared by several containers is ambiguous
    digit = next(d for d in "0123456789abcdef" if sum(c.id.startswith(d) for c in cs) > 1)
    with pytest.raises(Conflict, match="ambiguous"):
        store.get(digit)
    with pytest.raises(NotFound):
        store.get("f" * 64 if not any(c.id == "f" * 64 for c in cs) else "nope")
    with pytest.raises(InvalidArgument):
        store.get("")
    assert [c.id for c in store.list()] == [c.id for c in cs]  # oldest first


def test_damaged_records_are_skipped(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    good = new(store, "good")
    bad = new(store, "bad")
    with open(store.path(bad.id, "state.json"), "w") as f:
        f.write("{not json")
    os.mkdir(os.path.join(store.dir, "not-a-container"))
    assert [c.name for c in store.list()] == ["good"]
    with pytest.raises(InvalidFormat, match="damaged"):
        store.get(bad.id)
    assert store.get("good") == good
    with pytest.raises(InvalidFormat):
        Container.from_json({"id": "x"})
    with pytest.raises(InvalidFormat, match="64 hex"):
        Container(id="abc", name="n", image_ref="", image_id="", runtime="runc", created="")


def test_remove_dir_refuses_a_mounted_rootfs(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    c = new(store, "m")
    store.remove_dir(c)
    assert not os.path.exists(store.path(c.id))
    store.remove_dir(c)  # idempotent
    with pytest.raises(NotFound):
        store.get("m")


@pytest.mark.root
def test_remove_dir_with_a_mount_inside(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    c = new(store, "m")
    (Path(c.rootfs) / "precious").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", c.rootfs], check=True)
    try:
        Path(c.rootfs, "file").write_text("x")
        with pytest.raises(Conflict, match="mounted"):
            store.remove_dir(c)
        assert Path(c.rootfs, "file").exists()
    finally:
        subprocess.run(["umount", c.rootfs], check=True)
    assert Path(c.rootfs, "precious").is_dir()


def test_refresh_without_keeper_or_process(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    c = store.update(new(store).id, status="running", pid=2**22 + 1, keeper_pid=2**22 + 2)
    c = refresh(store, c)
    assert c.status == "exited" and c.exit_code is None  # died with lamina: code unknown
    d = store.update(new(store).id, status="running", keeper_pid=os.getpid())
    assert refresh(store, d).status == "running"  # its keeper (us) is alive
    with open(store.exit_path(d), "w") as f:
        json.dump({"exit_code": 3, "finished": "2024-01-01T00:00:00Z"}, f)
    d = refresh(store, d)
    assert (d.status, d.exit_code, d.finished) == ("exited", 3, "2024-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("text", "want"), [("9", 9), ("KILL", 9), ("sigterm", 15), ("SIGUSR1", 10), (2, 2)]
)
def test_parse_signal(text: str | int, want: int) -> None:
    assert parse_signal(text) == want


@pytest.mark.parametrize("text", ["0", "999", "NOPE", "", "SIG"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_signal(text)


# ---------------------------------------------------------------------- init files


def test_hosts() -> None:
    text = hosts_content("web1", "none")
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert text.endswith("127.0.1.1\tweb1\n")
    host = "127.0.0.1 localhost\n10.0.0.5 myhost.example myhost\n"
    assert hosts_content("myhost", "host", host) == host  # already named: kept as is
    assert hosts_content("other", "host", host) == host + "127.0.1.1\tother\n"
    assert hosts_content("x", "host", None).startswith("127.0.0.1\tlocalhost")


def test_resolv_conf() -> None:
    host = "search example.com\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"
    assert resolv_conf_content("host", host) == host
    none = resolv_conf_content("none", host)
    assert "nameserver" not in none.replace("no nameserver", "")
    assert "search example.com" in none and "options edns0" in none
    filtered = filter_resolv_conf(host)
    assert "127.0.0.53" not in filtered and "::1" not in filtered
    assert "nameserver 8.8.8.8" in filtered and "search example.com" in filtered
    kept = filter_resolv_conf("nameserver 10.1.1.1\nnameserver 127.0.0.1\n")
    assert kept == "nameserver 10.1.1.1\n"


def test_write_init_files(tmp_path: Path) -> None:
    hosts = tmp_path / "host-hosts"
    hosts.write_text("1.2.3.4 somewhere\n")
    resolv = tmp_path / "host-resolv"
    resolv.write_text("nameserver 9.9.9.9\n")
    out = write_init_files(
        str(tmp_path), "h1", "host", host_hosts=str(hosts), host_resolv_conf=str(resolv)
    )
    assert out == {
        "/etc/hosts": str(tmp_path / "hosts"),
        "/etc/resolv.conf": str(tmp_path / "resolv.conf"),
        "/etc/hostname": str(tmp_path / "hostname"),
    }
    assert (tmp_path / "hostname").read_text() == "h1\n"
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 9.9.9.9\n"
    assert (tmp_path / "hosts").read_text() == "1.2.3.4 somewhere\n127.0.1.1\th1\n"
    # a host without the files still gets usable ones
    write_init_files(
        str(tmp_path),
        "h2",
        "host",
        host_hosts=str(tmp_path / "absent"),
        host_resolv_conf=str(tmp_path / "absent"),
    )
    assert "localhost" in (tmp_path / "hosts").read_text()


def test_placeholders(tmp_path: Path) -> None:
    make_placeholders(str(tmp_path))
    make_placeholders(str(tmp_path))  # idempotent
    for d in ("dev", "dev/pts", "dev/shm", "proc", "sys", "etc"):
        assert (tmp_path / d).is_dir()
    for f in ("etc/hosts", "etc/resolv.conf", "etc/hostname"):
        assert (tmp_path / f).is_file() and (tmp_path / f).stat().st_size == 0
    assert os.readlink(tmp_path / "etc/mtab") == "/proc/mounts"
    with pytest.raises(InvalidArgument):
        make_placeholders(str(tmp_path), {"x": "fifo"})


# ---------------------------------------------------------------------- runtimes

HYBRID = """\
25 1 0:22 / /sys rw - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
28 26 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
UNIFIED = "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
LEGACY = (
    "26 25 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "28 26 0:25 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
)


@pytest.mark.parametrize(
    ("text", "want"), [(HYBRID, "hybrid"), (UNIFIED, "unified"), (LEGACY, "legacy"), ("", "legacy")]
)
def test_cgroup_layout(text: str, want: str) -> None:
    assert cgroup_layout(text) == want


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ('exec: "x": executable file not found in $PATH', 127),
        ("exec /bin/x: no such file or directory", 127),
        ("exec /etc/passwd: permission denied", 126),
        ("cgroups: something else", 125),
    ],
)
def test_exit_code_for(error: str, code: int) -> None:
    assert exit_code_for(error) == code


@pytest.mark.interop
def test_crun_falls_back_to_runc_when_the_workaround_cannot_run(tmp_path: Path) -> None:
    if cgroup_layout() != "hybrid":
        pytest.skip("this host's cgroups are not hybrid")
    try:
        runc, crun = find_binary("runc"), find_binary("crun")
    except NotFound:
        pytest.skip("runc or crun is not installed")
    bins = tmp_path / "bin"  # runc and crun, but no unshare: the workaround cannot run
    bins.mkdir()
    os.symlink(runc, bins / "runc")
    os.symlink(crun, bins / "crun")
    runtime, warning = select_runtime("crun", str(tmp_path), search_path=str(bins))
    assert runtime.name == "runc"
    assert warning is not None and "hybrid" in warning and "using runc" in warning
    assert "\n" not in warning


def test_status_text(tmp_path: Path) -> None:
    store = ContainerStore(str(tmp_path))
    c = new(store)
    at = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert status_text(c, at) == "Created"
    up = replace(c, status="running", started="2024-01-01T11:59:57Z")
    assert status_text(up, at) == "Up 3 seconds"
    done = replace(c, status="exited", exit_code=0, finished="2024-01-01T11:58:00.5Z")
    assert status_text(done, at) == "Exited (0) About a minute ago"
    lost = replace(c, status="exited", exit_code=None, finished="2024-01-01T09:00:00Z")
    assert status_text(lost, at) == "Exited (?) 3 hours ago"
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(59 * 60) == "59 minutes"
    assert human_duration(3 * 86400) == "3 days"
