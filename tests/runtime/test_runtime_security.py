"""Confinement, seen from inside real runc and crun containers on a busybox root: the
default seccomp profile, capabilities, no-new-privileges, devices, --privileged, exec."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from runtime_support import Runner

from helpers.probes import build_probe, parse, status
from lamina.errors import InvalidArgument, NotFound
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.security.devices import DeviceRequest, resolve
from lamina.runtime.bundle.security.options import SecurityOptions
from lamina.runtime.bundle.spec import RunOptions
from lamina.runtime.lifecycle import exec_in, prepare_bundle, remove, start_detached
from lamina.runtime.records.containers import ContainerStore

pytestmark = [pytest.mark.root, pytest.mark.interop]

# /proc/self/status CapEff of Docker's 14 default capabilities (as under `docker run`)
DOCKER_CAPEFF = "00000000a80425fb"
STATUS = "grep -E '^(Seccomp|CapEff|CapBnd|NoNewPrivs):' /proc/self/status"


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe(tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture
def probed(rootfs: Path, probe_binary: Path) -> Path:
    shutil.copy2(probe_binary, rootfs / "bin" / "probe")
    return rootfs


def sec(**fields: object) -> SecurityOptions:
    return SecurityOptions(**fields)  # type: ignore[arg-type]


def probe(run: Runner, runtime: str, security: SecurityOptions) -> tuple[str, dict[str, str]]:
    ran = run("sh", "-c", f"{STATUS}; /bin/probe", runtime=runtime, security=security)
    assert ran.result.exit_code == 0, ran.err
    return ran.out, parse(ran.out)


def test_default_profile_denies_what_dockers_denies(
    run: Runner, probed: Path, runtime: str
) -> None:
    out, results = probe(run, runtime, SecurityOptions())
    assert status(out, "Seccomp") == "2"
    assert status(out, "CapEff") == DOCKER_CAPEFF
    assert status(out, "NoNewPrivs") == "0"
    assert results == {
        "keyctl": "EPERM",
        "unshare_user": "EPERM",
        "clone_user": "EPERM",
        "perf_event_open": "EPERM",
        "io_uring_setup": "EPERM",
        "mount": "EPERM",
    }


def test_unconfined_restores_them(run: Runner, probed: Path, runtime: str) -> None:
    out, results = probe(run, runtime, sec(seccomp="unconfined"))
    assert status(out, "Seccomp") == "0"
    # what the kernel itself allows a root process with Docker's capabilities
    assert results["keyctl"] == "OK"
    assert results["unshare_user"] == "OK"
    assert results["clone_user"] == "OK"
    assert results["io_uring_setup"] == "OK"
    assert results["perf_event_open"] != "EPERM"  # EACCES where perf_event_paranoid > 2
    assert results["mount"] == "EPERM"  # no CAP_SYS_ADMIN: the kernel says no


def test_profile_rules_follow_the_capabilities(run: Runner, probed: Path, runtime: str) -> None:
    """CAP_SYS_ADMIN brings the rules that include it (mount, unshare, clone flags);
    the unconditional denials (keyrings, io_uring) stay."""
    out, results = probe(run, runtime, sec(cap_add=("SYS_ADMIN",)))
    assert status(out, "Seccomp") == "2"
    assert results["mount"] == "OK"
    assert results["unshare_user"] == "OK"
    assert results["clone_user"] == "OK"
    assert results["keyctl"] == "EPERM"
    assert results["io_uring_setup"] == "EPERM"


def test_seccomp_profile_file(run: Runner, rootfs: Path, tmp_path: Path, runtime: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            # a rule for a capability the container lacks is left out
            {
                "names": ["rmdir"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                "includes": {"caps": ["CAP_SYS_ADMIN"]},
            },
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    ran = run(
        "sh",
        "-c",
        f"{STATUS}; mkdir /tmp/d; echo mkdir=$?; rmdir /tmp; echo rmdir=$?",
        runtime=runtime,
        security=sec(seccomp=str(path)),
    )
    assert status(ran.out, "Seccomp") == "2"
    assert "mkdir=1" in ran.out and "Permission denied" in ran.err  # EACCES = 13
    assert "rmdir=0" in ran.out


@pytest.mark.parametrize(
    ("fields", "capeff"),
    [
        ({"cap_drop": ("ALL",)}, "0000000000000000"),
        ({"cap_drop": ("ALL",), "cap_add": ("chown", "CAP_KILL")}, f"{1 | 1 << 5:016x}"),
        ({"cap_add": ("NET_ADMIN",)}, f"{0xA80425FB | 1 << 12:016x}"),
        ({"cap_drop": ("NET_RAW", "mknod")}, f"{0xA80425FB & ~(1 << 13 | 1 << 27):016x}"),
    ],
)
def test_cap_add_and_drop(
    run: Runner, runtime: str, fields: dict[str, object], capeff: str
) -> None:
    ran = run("sh", "-c", STATUS, runtime=runtime, security=sec(**fields))
    assert status(ran.out, "CapEff") == capeff
    assert status(ran.out, "CapBnd") == capeff
    assert status(ran.out, "Seccomp") == "2"


def test_non_root_gets_no_effective_capabilities(run: Runner, runtime: str) -> None:
    ran = run("sh", "-c", STATUS, runtime=runtime, user="65534", security=sec(cap_add=("ALL",)))
    assert status(ran.out, "CapEff") == "0000000000000000"
    assert status(ran.out, "CapBnd") == own_status("CapBnd")


def test_no_new_privileges(run: Runner, runtime: str) -> None:
    ran = run("sh", "-c", STATUS, runtime=runtime, security=sec(no_new_privileges=True))
    assert status(ran.out, "NoNewPrivs") == "1"
    assert status(ran.out, "Seccomp") == "2"


def own_status(field: str) -> str:
    with open("/proc/self/status", encoding="ascii") as f:
        return status(f.read(), field)


def a_host_device() -> Path:
    """A device of the host's /dev that no runtime puts in a container by itself."""
    for name in ("loop7", "loop-control", "kmsg", "vga_arbiter"):
        path = Path("/dev") / name
        if path.exists() and stat.S_ISCHR(path.stat().st_mode) | stat.S_ISBLK(path.stat().st_mode):
            return path
    pytest.skip("no host device to test with")


def test_privileged(run: Runner, runtime: str) -> None:
    device = a_host_device()
    ran = run(
        "sh",
        "-c",
        f"{STATUS}; grep -E ' /sys (sysfs|cgroup) ' /proc/mounts; ls {device} && echo dev-ok;"
        " cat /proc/timer_list > /dev/null && echo unmasked;"
        " grep -E ' /proc/sys proc ' /proc/mounts || echo proc-sys-writable",
        runtime=runtime,
        security=sec(privileged=True),
    )
    assert status(ran.out, "Seccomp") == "0"
    assert status(ran.out, "CapEff") == own_status("CapBnd")  # every capability lamina has
    assert "sysfs /sys sysfs rw," in ran.out
    assert "dev-ok" in ran.out
    assert "unmasked" in ran.out
    assert "proc-sys-writable" in ran.out


def test_not_privileged_has_no_host_devices_and_ro_sys(run: Runner, runtime: str) -> None:
    device = a_host_device()
    ran = run(
        "sh",
        "-c",
        f"grep -E ' /sys sysfs ' /proc/mounts; ls {device} || echo no-dev",
        runtime=runtime,
    )
    assert "sysfs /sys sysfs ro," in ran.out
    assert "no-dev" in ran.out


def test_device_with_permissions(run: Runner, runtime: str) -> None:
    host = Path("/dev/loop7")
    if not host.exists():
        pytest.skip("no /dev/loop7")
    st = host.stat()
    # open for reading and for writing (O_APPEND, nothing written: the device is the host's)
    script = "ls -l /dev/xdev; head -c0 /dev/xdev && echo read-ok; : >> /dev/xdev && echo write-ok"
    ran = run(
        "sh",
        "-c",
        script,
        runtime=runtime,
        security=sec(devices=(DeviceRequest.parse(f"{host}:/dev/xdev:r"),)),
    )
    assert re.search(rf"\b{os.major(st.st_rdev)},\s+{os.minor(st.st_rdev)}\b", ran.out)
    assert ran.out.startswith("b")
    assert "read-ok" in ran.out
    assert "write-ok" not in ran.out
    assert "Operation not permitted" in ran.err  # the device cgroup said no
    ran = run(
        "sh",
        "-c",
        script,
        runtime=runtime,
        security=sec(devices=(DeviceRequest.parse(f"{host}:/dev/xdev"),)),
    )
    assert "read-ok" in ran.out and "write-ok" in ran.out


def test_device_errors() -> None:
    with pytest.raises(NotFound, match="does not exist"):
        resolve(DeviceRequest.parse("/dev/no-such-device"))
    with pytest.raises(InvalidArgument, match="not a device"):
        resolve(DeviceRequest.parse("/etc/hostname"))


def test_exec_keeps_the_filter_and_privileged_exec(
    cstore: ContainerStore, rootfs: Path, tmp_path: Path, runtime: str
) -> None:
    c = cstore.create(
        image_ref="busybox:test",
        image_id="sha256:" + "2" * 64,
        runtime=runtime,
        rootfs=str(rootfs),
        command=("sh",),
    )
    options = RunOptions(args=("sh", "-c", "while :; do sleep 0.05; done"))
    prepare_bundle(cstore, c, ContainerConfig(cmd=("sh",)), options)
    c = start_detached(cstore, c)
    try:
        for privileged, capeff in ((False, DOCKER_CAPEFF), (True, own_status("CapBnd"))):
            out = tmp_path / f"exec-{privileged}"
            with open(out, "wb") as f:
                result = exec_in(
                    cstore, c, ["sh", "-c", STATUS], privileged=privileged, stdout=f.fileno()
                )
            assert result.exit_code == 0
            text = out.read_text()
            assert status(text, "Seccomp") == "2"  # the container's filter, in both
            assert status(text, "CapEff") == capeff
    finally:
        remove(cstore, c, force=True)
