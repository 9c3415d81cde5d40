"""Containers run by the real runc on a busybox root: what the process sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runtime_support import Runner

from lamina.errors import InvalidArgument, NotFound, Unsafe
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.spec import RunOptions, Volume
from lamina.runtime.driver.process import EXIT_NOT_FOUND
from lamina.runtime.lifecycle import prepare_bundle
from lamina.runtime.records.containers import ContainerStore

pytestmark = [pytest.mark.root, pytest.mark.interop]


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(run: Runner, code: int) -> None:
    ran = run("sh", "-c", f"exit {code}")
    assert ran.result.exit_code == code
    assert ran.result.runtime_error is None
    assert ran.container.status == "exited"
    assert ran.container.exit_code == code


def test_command_not_found(run: Runner) -> None:
    ran = run("/no/such/program")
    assert ran.result.exit_code == EXIT_NOT_FOUND
    assert ran.result.runtime_error and "/no/such/program" in ran.result.runtime_error
    assert ran.container.exit_code == EXIT_NOT_FOUND


def test_output_and_entrypoint(run: Runner) -> None:
    config = ContainerConfig(entrypoint=("/bin/echo", "from-entrypoint"), cmd=("default",))
    assert run(config=config).out == "from-entrypoint default\n"
    assert run("given", config=config).out == "from-entrypoint given\n"
    ran = run("x", config=config, entrypoint=("/bin/sh", "-c", "echo $0-$1", "y"))
    assert ran.out == "y-x\n"
    ran = run("sh", "-c", "echo out; echo err >&2", config=config, entrypoint=())
    assert (ran.out, ran.err) == ("out\n", "err\n")


def test_env(run: Runner) -> None:
    config = ContainerConfig(env=("IMG=1", "SHARED=image", "PATH=/bin:/usr/bin"), cmd=("env",))
    ran = run(config=config, env=("SHARED=cli", "NEW=x y"), hostname="envhost")
    env = dict(line.split("=", 1) for line in ran.out.splitlines())
    assert env["IMG"] == "1"
    assert env["SHARED"] == "cli"
    assert env["NEW"] == "x y"
    assert env["PATH"] == "/bin:/usr/bin"
    assert env["HOSTNAME"] == "envhost"
    assert env["HOME"] == "/root"


def test_workdir_created_and_used(run: Runner, rootfs: Path) -> None:
    config = ContainerConfig(working_dir="/app/work", cmd=("pwd",))
    assert run(config=config).out == "/app/work\n"
    assert (rootfs / "app/work").is_dir()
    assert run(config=config, workdir="/srv/other").out == "/srv/other\n"


def test_workdir_symlink_stays_inside(run: Runner, rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "host-dir"
    outside.mkdir()
    os.symlink(str(outside), rootfs / "escape")
    ran = run("sh", "-c", "pwd; touch here", config=ContainerConfig(working_dir="/escape/w"))
    assert ran.result.exit_code == 0
    assert ran.out == f"{outside}/w\n"
    assert (rootfs / str(outside).lstrip("/") / "w/here").exists()
    assert list(outside.iterdir()) == []


def test_user_by_name(run: Runner, rootfs: Path) -> None:
    with open(rootfs / "etc/passwd", "a") as f:
        f.write("app:x:1000:1001:App:/home/app:/bin/sh\n")
    with open(rootfs / "etc/group", "a") as f:
        f.write("appgrp:x:1001:\nextra:x:2000:app\n")
    ran = run(
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $HOME; cat /proc/self/status | grep CapEff",
        user="app",
    )
    lines = ran.out.splitlines()
    assert lines[:4] == ["1000", "1001", "1001 2000", "/home/app"]
    assert lines[4].split()[1] == "0000000000000000"  # a non-root user has no capabilities
    ran = run("id", config=ContainerConfig(user="1234:5678", cmd=("id",)))
    assert ran.out.startswith("uid=1234 gid=5678")


def test_unknown_user(run: Runner) -> None:
    with pytest.raises(NotFound, match="unable to find user 'ghost'"):
        run("id", user="ghost")


def test_user_through_hostile_passwd(run: Runner, rootfs: Path) -> None:
    os.unlink(rootfs / "etc/passwd")
    os.symlink("/dev/zero", rootfs / "etc/passwd")  # inside the root: no such device there
    os.makedirs(rootfs / "dev", exist_ok=True)
    os.mknod(rootfs / "dev/zero", 0o666 | 0o020000, os.makedev(1, 5))
    with pytest.raises(Unsafe, match="not a regular file"):
        run("id", user="root")


def test_read_only_root(run: Runner) -> None:
    ran = run(
        "sh", "-c", "touch /x 2>&1; echo rc=$?; touch /dev/shm/y && echo shm-ok", read_only=True
    )
    assert "Read-only file system" in ran.out
    assert "rc=1" in ran.out and "shm-ok" in ran.out
    assert "rc=0" in run("sh", "-c", "touch /x; echo rc=$?").out


def test_volumes(run: Runner, tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given").write_text("hello\n")
    script = "cat /in/given; echo data > /out/made; touch /in/nope 2>/dev/null || echo ro-refused"
    ran = run(
        "sh",
        "-c",
        script,
        volumes=(Volume(str(rw), "/out"), Volume(str(ro), "/in", read_only=True)),
    )
    assert ran.out == "hello\nro-refused\n"
    assert (rw / "made").read_text() == "data\n"
    assert not (ro / "nope").exists()


def test_missing_volume_source(run: Runner, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        run("true", volumes=(Volume(str(tmp_path / "absent"), "/x"),))


def test_network_none(run: Runner) -> None:
    assert run("ls", "/sys/class/net", network="none").out.split() == ["lo"]
    # Other tests (other xdist workers) make and remove bridges and veths meanwhile:
    # the container sees the host's links as they were at some moment between the two
    # listings, so every link both listings hold, and none that neither holds.
    before = set(os.listdir("/sys/class/net"))
    host = set(run("ls", "/sys/class/net", network="host").out.split())
    after = set(os.listdir("/sys/class/net"))
    assert before & after <= host <= before | after
    assert "lo" in host and len(host) > 1


def test_init_files(run: Runner, rootfs: Path) -> None:
    (rootfs / "etc/hostname").write_text("from-the-image\n")
    (rootfs / "etc/hosts").write_text("6.6.6.6 image-host\n")
    ran = run(
        "sh",
        "-c",
        "hostname; cat /etc/hostname; cat /etc/hosts; cat /etc/resolv.conf",
        hostname="web1",
        network="none",
    )
    out = ran.out
    assert out.startswith("web1\nweb1\n")
    assert "127.0.0.1\tlocalhost" in out and "\tweb1" in out
    assert "image-host" not in out and "from-the-image" not in out
    assert "no nameserver" in out
    # the image's files are untouched: the init files are bind mounts
    assert (rootfs / "etc/hostname").read_text() == "from-the-image\n"
    d = ran.container
    assert d.status == "exited"


def test_host_network_gets_the_hosts_resolv_conf(run: Runner) -> None:
    with open("/etc/resolv.conf") as f:
        host = f.read()
    assert run("cat", "/etc/resolv.conf", network="host").out == host


def test_masked_and_readonly_paths(run: Runner) -> None:
    ran = run(
        "sh", "-c", "wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/domainname 2>&1;echo rc=$?"
    )
    lines = ran.out.split()
    assert lines[0] == "0"  # masked: /dev/null bound over it (the host reads thousands)
    assert "rc=1" in ran.out


def test_devices_are_denied(run: Runner) -> None:
    # CAP_MKNOD is in the default set; the device cgroup rule keeps host disks closed
    ran = run("sh", "-c", "mknod /tmp/disk b 8 0 && head -c1 /tmp/disk; echo rc=$?")
    assert "rc=1" in ran.out
    assert "Operation not permitted" in ran.err or "not permitted" in ran.out


def test_no_command(cstore: ContainerStore, rootfs: Path) -> None:
    c = cstore.create(image_ref="x", image_id="y", runtime="runc", rootfs=str(rootfs))
    with pytest.raises(InvalidArgument, match="no command specified"):
        prepare_bundle(cstore, c, ContainerConfig(), RunOptions())


def test_workdir_in_proc_refused(cstore: ContainerStore, rootfs: Path) -> None:
    c = cstore.create(image_ref="x", image_id="y", runtime="runc", rootfs=str(rootfs))
    with pytest.raises(Unsafe):
        prepare_bundle(
            cstore, c, ContainerConfig(working_dir="/proc/self/fd/5", cmd=("sh",)), RunOptions()
        )
