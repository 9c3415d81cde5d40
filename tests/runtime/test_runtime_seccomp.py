"""The translation of Docker-format seccomp profiles, the capability rules, the
security options and what --privileged and --device put in a spec (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import InvalidArgument, InvalidFormat, NotFound, Unsupported
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.security import seccomp
from lamina.runtime.bundle.security.capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    effective_set,
    from_mask,
    host_bounding_set,
    normalize,
)
from lamina.runtime.bundle.security.devices import Device, DeviceRequest
from lamina.runtime.bundle.security.options import HostSecurity, SecurityOptions
from lamina.runtime.bundle.spec import RunOptions, build_spec, exec_process
from lamina.runtime.bundle.users import ResolvedUser
from lamina.runtime.plans.cache import HOST_FILES

AMD64 = {"arch": "amd64", "seccomp_arch": "SCMP_ARCH_X86_64", "kernel": (6, 1)}


def names_of(out: dict[str, Any] | None) -> list[list[str]]:
    assert out is not None
    return [rule["names"] for rule in out["syscalls"]]


def translate(
    profile: dict[str, Any], caps: tuple[str, ...] = DEFAULT_CAPABILITIES, **kw: Any
) -> dict[str, Any] | None:
    return seccomp.translate(profile, capabilities=caps, **{**AMD64, **kw})


# ---------------------------------------------------------------------- translation


def test_conditions_on_caps_arches_and_kernel() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "archMap": [
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        ],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {
                "names": ["bpf"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            {
                "names": ["arch_prctl"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"arches": ["amd64"]},
            },
            {
                "names": ["cacheflush"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"arches": ["arm64"]},
            },
            {"names": ["odd"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.0"}},
            {
                "name": "personality",
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }
    out = translate(profile)
    assert out is not None
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert out["defaultErrnoRet"] == 38
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert names_of(out) == [["read"], ["bpf"], ["arch_prctl"], ["ptrace"], ["personality"]]
    assert out["syscalls"][1] == {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    assert out["syscalls"][-1]["args"] == [
        {"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}
    ]
    admin = translate(profile, (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"))
    assert (
        names_of(admin)[1] == ["bpf"]
        and admin
        and admin["syscalls"][1]["action"] == "SCMP_ACT_ALLOW"
    )
    old = translate(profile, kernel=(4, 4))
    assert ["ptrace"] not in names_of(old)
    arm = translate(profile, arch="arm64", seccomp_arch="SCMP_ARCH_AARCH64")
    assert arm and arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert ["cacheflush"] in names_of(arm) and ["odd"] in names_of(arm)


def test_architectures_the_kernel_cannot_run_are_left_out() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            }
        ],
    }
    out = translate(profile, skip_arches=("SCMP_ARCH_X32",))
    assert out and out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    # this host: x32 is in the filter exactly when the kernel runs x32 code
    expected = () if seccomp.kernel_runs_x32() else ("SCMP_ARCH_X32",)
    assert seccomp.foreign_arches("SCMP_ARCH_X86_64") == expected
    assert seccomp.foreign_arches("SCMP_ARCH_AARCH64") == ()


def test_includes_need_every_cap_excludes_drop_on_any() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {
                "names": ["a"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_KILL", "CAP_BPF"]},
            },
            {
                "names": ["b"],
                "action": "SCMP_ACT_ALLOW",
                "excludes": {"caps": ["CAP_BPF", "CAP_KILL"]},
            },
        ],
    }
    assert names_of(translate(profile, ("CAP_KILL",))) == []
    assert names_of(translate(profile, ("CAP_KILL", "CAP_BPF"))) == [["a"]]
    assert names_of(translate(profile, ("CAP_CHOWN",))) == [["b"]]


def test_empty_profile_is_unconfined_and_bad_profiles_are_refused() -> None:
    assert translate({}) is None
    assert translate({"syscalls": []}) is None
    bad: list[dict[str, Any]] = [
        {"defaultAction": "SCMP_ACT_NOPE"},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "ALLOW"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "read"},
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["X"], "archMap": [{}]},
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}],
        },
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "op": "LIKE"}]}
            ],
        },
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}],
        },
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}
            ],
        },
    ]
    for profile in bad:
        with pytest.raises(InvalidFormat):
            translate(profile)


def test_docker_rules_replace_the_files_rules_for_their_names() -> None:
    base = seccomp.load_profile(seccomp.DEFAULT_PROFILE)
    allowed = next(
        r for r in base["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and len(r["names"]) > 100
    )
    # containers-common allows these unconditionally; Docker does not
    assert {"keyctl", "unshare", "mount", "clone", "setns"} <= set(allowed["names"])
    out = translate(seccomp.with_docker_rules(base))
    assert out is not None
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in out["syscalls"]:
        for name in rule["names"]:
            by_name.setdefault(name, []).append(rule)
    for name in ("keyctl", "add_key", "io_uring_setup", "unshare", "mount", "setns", "umount2"):
        assert [(r["action"], r.get("errnoRet")) for r in by_name[name]] == [
            ("SCMP_ACT_ERRNO", 1)
        ], name
    clone = by_name["clone"]
    assert clone[0]["action"] == "SCMP_ACT_ALLOW"
    assert clone[0]["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    assert all(r["action"] == "SCMP_ACT_ERRNO" for r in clone[1:]) and len(clone) == 8
    assert by_name["clone3"] == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    assert by_name["read"][0]["action"] == "SCMP_ACT_ALLOW"
    admin = translate(seccomp.with_docker_rules(base), (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"))
    assert admin is not None
    unshare = [r for r in admin["syscalls"] if "unshare" in r["names"]]
    assert [r["action"] for r in unshare] == ["SCMP_ACT_ALLOW"]


def test_load_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        seccomp.load_profile(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InvalidFormat, match="not JSON"):
        seccomp.load_profile(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidFormat, match="object"):
        seccomp.load_profile(str(tmp_path / "list.json"))


def test_arch_and_kernel_names() -> None:
    assert seccomp.native_arch("x86_64") == ("amd64", "SCMP_ARCH_X86_64")
    assert seccomp.native_arch("aarch64") == ("arm64", "SCMP_ARCH_AARCH64")
    assert seccomp.kernel_version("6.18.0-1-amd64") == (6, 18)
    assert seccomp.kernel_version("4.8") == (4, 8)
    assert seccomp.kernel_version("5.10rc1-x") == (5, 10)


def test_the_plans_watch_the_default_profile() -> None:
    assert seccomp.DEFAULT_PROFILE in HOST_FILES


# ---------------------------------------------------------------------- capabilities


def test_capability_rules() -> None:
    assert normalize("sys_admin") == normalize("CAP_SYS_ADMIN") == "CAP_SYS_ADMIN"
    assert normalize("all") == "ALL"
    with pytest.raises(InvalidArgument, match="unknown capability"):
        normalize("CAP_WIZARDRY")
    assert effective_set() == list(DEFAULT_CAPABILITIES)
    assert effective_set(drop=["ALL"]) == []
    assert effective_set(add=["kill", "chown"], drop=["all"]) == ["CAP_KILL", "CAP_CHOWN"]
    assert effective_set(add=["ALL"], drop=["NET_RAW"]) == [
        c for c in ALL_CAPABILITIES if c != "CAP_NET_RAW"
    ]
    assert effective_set(add=["NET_ADMIN", "CHOWN"]) == [*DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"]
    assert "CAP_MKNOD" not in effective_set(drop=["mknod"])
    every = ("CAP_CHOWN", "CAP_KILL")
    assert effective_set(privileged=True, every=every) == list(every)
    assert effective_set(add=["ALL"], every=every) == list(every)


def test_bounding_set_from_status(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_text("Name:\tx\nCapBnd:\t000001fffeffffff\n")
    got = host_bounding_set(str(path))
    assert "CAP_SYS_RESOURCE" not in got and len(got) == 40
    assert from_mask(0xA80425FB) == tuple(c for c in ALL_CAPABILITIES if c in DEFAULT_CAPABILITIES)


# ---------------------------------------------------------------------- options


def test_security_opt_parsing(tmp_path: Path) -> None:
    base = SecurityOptions()
    assert base.with_security_opts(["seccomp=unconfined"]).seccomp == "unconfined"
    assert base.with_security_opts(["seccomp:unconfined"]).seccomp == "unconfined"
    assert base.with_security_opts(["seccomp=p.json"], cwd=str(tmp_path)).seccomp == str(
        tmp_path / "p.json"
    )
    assert base.with_security_opts(["no-new-privileges"]).no_new_privileges
    assert base.with_security_opts(["no-new-privileges=true"]).no_new_privileges
    assert not base.with_security_opts(["no-new-privileges:false"]).no_new_privileges
    for item in ("seccomp=", "no-new-privileges=maybe", "bogus"):
        with pytest.raises(InvalidArgument):
            base.with_security_opts([item])
    with pytest.raises(Unsupported):
        base.with_security_opts(["apparmor=unconfined"])
    with pytest.raises(InvalidArgument, match="absolute"):
        SecurityOptions(seccomp="relative.json")
    assert SecurityOptions(cap_add=("net_admin", "CAP_NET_ADMIN")).cap_add == ("CAP_NET_ADMIN",)


def test_device_parsing() -> None:
    assert DeviceRequest.parse("/dev/sda") == DeviceRequest("/dev/sda", "/dev/sda", "rwm")
    assert DeviceRequest.parse("/dev/sda:r") == DeviceRequest("/dev/sda", "/dev/sda", "r")
    assert DeviceRequest.parse("/dev/sda:/dev/xvdc") == DeviceRequest(
        "/dev/sda", "/dev/xvdc", "rwm"
    )
    assert DeviceRequest.parse("/dev/sda:/dev/xvdc:rw").permissions == "rw"
    for bad in (
        "sda",
        "/dev/sda:xvdc",
        "/dev/sda:/dev/x:rwx",
        "/dev/sda:/dev/x:rr",
        "/a:/b:r:w",
        "/dev/a:/dev/../b",
    ):
        with pytest.raises(InvalidArgument):
            DeviceRequest.parse(bad)


# ---------------------------------------------------------------------- the spec


def spec_for(security: SecurityOptions, host: HostSecurity | None = None) -> dict[str, Any]:
    return build_spec(
        ContainerConfig(cmd=("sh",)),
        RunOptions(security=security),
        rootfs="/r",
        user=ResolvedUser(0, 0),
        init_files={},
        hostname="h",
        host_security=host,
    )


DEV = Device(
    path="/dev/x", type="b", major=7, minor=3, file_mode=0o600, uid=0, gid=6, permissions="r"
)


def test_spec_default_and_device() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }
    spec = spec_for(SecurityOptions(), HostSecurity(profile=profile, devices=(DEV,)))
    linux = spec["linux"]
    assert linux["seccomp"]["syscalls"] == [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
    assert linux["devices"] == [
        {
            "path": "/dev/x",
            "type": "b",
            "major": 7,
            "minor": 3,
            "fileMode": 0o600,
            "uid": 0,
            "gid": 6,
        }
    ]
    assert linux["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "b", "major": 7, "minor": 3, "access": "r"},
    ]
    assert linux["maskedPaths"] and linux["readonlyPaths"]
    assert spec["process"]["noNewPrivileges"] is False
    sysfs = next(m for m in spec["mounts"] if m["type"] == "sysfs")
    assert "ro" in sysfs["options"]
    json.dumps(spec)  # plain JSON


def test_spec_privileged() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO"}
    every = ("CAP_CHOWN", "CAP_SYS_ADMIN")
    spec = spec_for(
        SecurityOptions(privileged=True),
        HostSecurity(profile=profile, devices=(DEV,), all_capabilities=every),
    )
    linux = spec["linux"]
    assert "seccomp" not in linux
    assert spec["process"]["capabilities"]["effective"] == list(every)
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    for m in spec["mounts"]:
        if m["type"] in ("sysfs", "cgroup"):
            assert "ro" not in m["options"]
    assert linux["devices"][0]["path"] == "/dev/x"


def test_exec_process_keeps_the_containers_capabilities() -> None:
    spec = spec_for(SecurityOptions(cap_drop=("ALL",), cap_add=("KILL",)))
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    as_user = exec_process(spec, ["id"], user=ResolvedUser(5, 6))
    assert as_user["capabilities"] == {"bounding": ["CAP_KILL"]}
    assert exec_process(spec, ["id"])["capabilities"]["effective"] == ["CAP_KILL"]
    privileged = exec_process(spec, ["id"], privileged=True, all_capabilities=("CAP_A", "CAP_B"))
    assert privileged["capabilities"]["effective"] == ["CAP_A", "CAP_B"]


def test_run_options_default_to_docker_confinement() -> None:
    assert RunOptions().security == SecurityOptions()
    assert SecurityOptions().seccomp == "default"
