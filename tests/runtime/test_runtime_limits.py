"""Resource limits seen from inside real runc and crun containers on a busybox root:
memory (and the OOM kill in the record), pids, CPU, ulimits, /dev/shm and --tmpfs;
then the spec they make and the errors of bad values."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from runtime_support import Runner

from helpers.cli import LAMINA, Lamina
from lamina.errors import InvalidArgument
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.resources import (
    RLIM_INFINITY,
    Resources,
    Tmpfs,
    Ulimit,
    parse_size,
    swap_accounting,
)
from lamina.runtime.bundle.spec import RunOptions, build_spec
from lamina.runtime.bundle.users import ResolvedUser
from lamina.runtime.driver.runc import OCIRuntime
from lamina.runtime.lifecycle import prepare_bundle, remove, start_detached, wait_exited
from lamina.runtime.records.containers import ContainerStore
from lamina.runtime.run import RunRequest, _plan_variant
from lamina.snapshot.overlay import OverlaySnapshotter

MiB = 1 << 20
# the container's own cgroup of a controller (runc and crun bind it at /sys/fs/cgroup/X)
OWN = "/sys/fs/cgroup/{0}/{1}"


def limits(**fields: Any) -> Resources:
    return Resources(**fields)


@pytest.mark.root
def test_memory_limit_oom_kill_is_recorded(
    run: Runner, runtime: str, cstore: ContainerStore
) -> None:
    # busybox dd allocates its 128 MiB block and fills it from /dev/zero
    dd = ("dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
    ran = run(*dd, runtime=runtime, resources=limits(memory=64 * MiB), keep=True)
    assert ran.result.exit_code == 137, ran.err
    record = cstore.get(ran.container.id)
    assert record.oom_killed is True
    assert record.to_json()["oom_killed"] is True
    free = run(*dd, runtime=runtime, keep=True)  # no limit: the same dd is no OOM
    assert free.result.exit_code == 0, free.err
    assert cstore.get(free.container.id).oom_killed is False


@pytest.mark.root
def test_detached_oom_kill_is_recorded(cstore: ContainerStore, rootfs: Path, runtime: str) -> None:
    c = cstore.create(
        image_ref="busybox:test", image_id="sha256:" + "0" * 64, runtime=runtime, rootfs=str(rootfs)
    )
    options = RunOptions(
        args=("dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"),
        resources=limits(memory=64 * MiB),
    )
    prepare_bundle(cstore, c, ContainerConfig(cmd=("sh",)), options)
    c = start_detached(cstore, c)
    try:
        c = wait_exited(cstore, c, 30.0)
        assert c.status == "exited"
        assert c.exit_code == 137
        assert c.oom_killed is True
    finally:
        remove(cstore, c, force=True)


@pytest.mark.root
def test_memory_limit_in_the_cgroup(run: Runner, runtime: str) -> None:
    ran = run(
        "cat",
        OWN.format("memory", "memory.limit_in_bytes"),
        runtime=runtime,
        resources=limits(memory=64 * MiB),
    )
    assert ran.result.exit_code == 0, ran.err
    assert ran.out.strip() == str(64 * MiB)


# busybox sh gives up (exit 2) at the first fork that fails; the sleeps it started
# stay, counted by a glob (no fork left for `ls`), then killed: the bomb is killable
FORK_BOMB = (
    "(for i in $(seq 100); do sleep 60 & done) 2>/tmp/err; echo rc=$?; "
    "set -- /proc/[0-9]*; echo procs=$#; "
    "kill -9 -1; wait; "  # every process but pid 1 (this shell)
    "grep -q fork /tmp/err && echo fork-failed"
)


@pytest.mark.root
def test_pids_limit_stops_a_fork_bomb(run: Runner, runtime: str) -> None:
    ran = run("sh", "-c", FORK_BOMB, runtime=runtime, resources=limits(pids_limit=50))
    assert ran.result.exit_code == 0, ran.err
    lines = ran.out.split()
    assert lines[0] == "rc=2"
    assert int(lines[1].partition("=")[2]) <= 50
    assert lines[2] == "fork-failed"


@pytest.mark.root
def test_default_pids_limit_in_the_cgroup(run: Runner, runtime: str) -> None:
    ran = run("cat", OWN.format("pids", "pids.max"), runtime=runtime)
    assert ran.out.strip() == "2048", ran.err
    ran = run(
        "cat", OWN.format("pids", "pids.max"), runtime=runtime, resources=limits(pids_limit=-1)
    )
    assert ran.out.strip() == "max", ran.err


@pytest.mark.root
def test_cpus_and_shares_in_the_cgroup(run: Runner, runtime: str) -> None:
    files = " ".join(
        OWN.format("cpu", f) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares")
    )
    ran = run("cat", *files.split(), runtime=runtime, resources=limits(cpus=0.5, cpu_shares=512))
    assert ran.out.split() == ["50000", "100000", "512"], ran.err


@pytest.mark.root
def test_ulimit(run: Runner, runtime: str) -> None:
    nofile = Ulimit.parse("nofile=100:200")
    ran = run(
        "sh", "-c", "ulimit -n; ulimit -Hn", runtime=runtime, resources=limits(ulimits=(nofile,))
    )
    assert ran.out.split() == ["100", "200"], ran.err


@pytest.mark.root
def test_shm_size_and_tmpfs(run: Runner, runtime: str) -> None:
    script = "df -k /dev/shm | tail -1; grep ' /scratch ' /proc/mounts; touch /scratch/x"
    ran = run(
        "sh",
        "-c",
        script,
        runtime=runtime,
        resources=limits(shm_size=MiB, tmpfs=(Tmpfs.parse("/scratch:size=2m,mode=0700"),)),
    )
    assert ran.result.exit_code == 0, ran.err
    shm, scratch = ran.out.splitlines()
    assert shm.split()[1] == "1024"  # 1K-blocks
    fields = scratch.split()
    assert fields[2] == "tmpfs"
    assert "size=2048k" in fields[3] and "mode=700" in fields[3] and "noexec" in fields[3]


# ---------------------------------------------------------------------- the spec


def spec(resources: Resources) -> dict[str, Any]:
    return build_spec(
        ContainerConfig(cmd=("sh",)),
        RunOptions(resources=resources),
        rootfs="/r/rootfs",
        user=ResolvedUser(uid=0, gid=0, home="/root"),
        init_files={},
        hostname="abcdef012345",
    )


def test_spec_fields() -> None:
    doc = spec(
        Resources(
            memory=64 * MiB,
            memory_swap=-1,
            pids_limit=-1,
            cpus=1.5,
            cpu_shares=2048,
            ulimits=(Ulimit.parse("nofile=10"), Ulimit.parse("core=0:unlimited")),
            shm_size=MiB,
            tmpfs=(Tmpfs.parse("/run:exec"),),
        )
    )
    res = doc["linux"]["resources"]
    assert res["memory"] == {"limit": 64 * MiB, "swap": -1}
    assert "pids" not in res  # -1: no limit
    assert res["cpu"] == {"shares": 2048, "quota": 150000, "period": 100000}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]
    assert doc["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": RLIM_INFINITY},
    ]
    mounts = {m["destination"]: m for m in doc["mounts"]}
    assert "size=1048576" in mounts["/dev/shm"]["options"]
    assert mounts["/run"]["options"] == ["nosuid", "nodev", "exec"]


def test_sizes() -> None:
    assert parse_size("64m", "x") == 64 * MiB
    assert parse_size("64MiB", "x") == 64 * MiB
    assert parse_size("1g", "x") == 1 << 30
    assert parse_size("512", "x") == 512
    assert parse_size("1.5k", "x") == 1536


@pytest.mark.parametrize(
    "make",
    [
        lambda: parse_size("lots", "--memory"),
        lambda: parse_size("-5m", "--memory"),
        lambda: Resources(memory=MiB),  # below 6 MiB
        lambda: Resources(memory_swap=128 * MiB),  # without --memory
        lambda: Resources(memory=64 * MiB, memory_swap=32 * MiB),
        lambda: Resources(pids_limit=0),
        lambda: Resources(pids_limit=-2),
        lambda: Resources(cpus=0.0),
        lambda: Resources(cpu_shares=1),
        lambda: Resources(shm_size=0),
        lambda: Ulimit.parse("nofile"),
        lambda: Ulimit.parse("bogus=1"),
        lambda: Ulimit.parse("nofile=200:100"),
        lambda: Ulimit.parse("nofile=ten"),
        lambda: Tmpfs.parse("relative"),
        lambda: Tmpfs.parse("/"),
        lambda: Tmpfs.parse("/x:size=lots"),
        lambda: Tmpfs.parse("/x:bogus"),
        lambda: RunOptions(resources=Resources(tmpfs=(Tmpfs.parse("/a"), Tmpfs.parse("/a")))),
    ],
)
def test_bad_values(make: Any) -> None:
    with pytest.raises(InvalidArgument):
        make()


@pytest.mark.parametrize(
    "option",
    [
        ["--memory", "lots"],
        ["--pids-limit", "many"],
        ["--cpus", "x"],
        ["--ulimit", "nofile=9:1"],
        ["--tmpfs", "tmp"],
        ["--shm-size", "0"],
    ],
)
def test_bad_values_are_clean_cli_errors(option: list[str], tmp_path: Any) -> None:
    proc = subprocess.run(
        [*LAMINA, "--root", str(tmp_path), "run", *option, "busybox", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode not in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr.lower()


@pytest.mark.parametrize(
    ("resources", "planned"),
    [
        (Resources(), True),  # the default pids limit is part of the default spec
        (Resources(memory=64 * MiB), False),
        (Resources(pids_limit=50), False),
        (Resources(pids_limit=-1), False),
        (Resources(cpus=1.0), False),
        (Resources(ulimits=(Ulimit.parse("nofile=100"),)), False),
        (Resources(shm_size=MiB), False),
        (Resources(tmpfs=(Tmpfs.parse("/run"),)), False),
    ],
)
def test_only_default_limits_are_planned(
    resources: Resources, planned: bool, tmp_path: Path
) -> None:
    request = RunRequest(image="busybox", options=RunOptions(args=("true",), resources=resources))
    runc = OCIRuntime("runc", str(tmp_path), binary="/bin/true")
    variant = _plan_variant(request, OverlaySnapshotter(str(tmp_path)), runc)
    assert (variant == "") is planned
    assert variant in ("", None)


# ---------------------------------------------------------------------- the CLI


@pytest.mark.root
def test_cli_limits_and_oom_in_ps(lamina: Lamina) -> None:
    lamina("bootstrap", "busybox", "-t", "bb")
    dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]
    run = ["run", "--network", "none"]
    killed = lamina(*run, "--name", "hog", "-m", "64m", "bb", *dd, check=False)
    assert killed.returncode == 137, killed.stderr
    (record,) = json.loads(lamina("ps", "-a", "--json").stdout)
    assert record["name"] == "hog"
    assert record["exit_code"] == 137
    assert record["oom_killed"] is True
    out = lamina(
        *run,
        "--rm",
        "--ulimit",
        "nofile=100:200",
        "--shm-size",
        "1m",
        "--tmpfs",
        "/scratch:size=2m",
        "--pids-limit",
        "60",
        "bb",
        "sh",
        "-c",
        "ulimit -n; df -k /dev/shm | tail -1; cat /sys/fs/cgroup/pids/pids.max; "
        "grep -c ' /scratch tmpfs' /proc/mounts",
    ).stdout.splitlines()
    assert out[0] == "100"
    assert out[1].split()[1] == "1024"
    assert out[2:] == ["60", "1"]


def test_default_swap_is_twice_memory_where_swap_is_accounted(tmp_path: Path) -> None:
    # Docker: --memory alone allows as much swap again (memory+swap = 2x memory), but
    # only where the kernel accounts swap; elsewhere runc could not write the limit.
    assert Resources(memory=64 * MiB).linux_resources(True)["memory"] == {
        "limit": 64 * MiB,
        "swap": 128 * MiB,
    }
    assert Resources(memory=64 * MiB).linux_resources(False)["memory"] == {"limit": 64 * MiB}
    given = Resources(memory=64 * MiB, memory_swap=96 * MiB).linux_resources(True)
    assert given["memory"]["swap"] == 96 * MiB
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    assert not swap_accounting(str(v1))
    (v1 / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    assert swap_accounting(str(v1))
    v2 = tmp_path / "v2"
    (v2 / "init.scope").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert not swap_accounting(str(v2))
    (v2 / "init.scope" / "memory.swap.max").write_text("max\n")
    assert swap_accounting(str(v2))
    # and the spec this host gets agrees with what this host has
    doc = spec(Resources(memory=64 * MiB))
    expected = {"limit": 64 * MiB} | ({"swap": 128 * MiB} if swap_accounting() else {})
    assert doc["linux"]["resources"]["memory"] == expected
