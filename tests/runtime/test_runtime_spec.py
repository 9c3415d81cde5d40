"""The config.json lamina writes: Docker's ENTRYPOINT/CMD matrix and every run option."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.errors import InvalidArgument
from lamina.oci.config import ContainerConfig
from lamina.runtime.bundle.security.capabilities import DEFAULT_CAPABILITIES
from lamina.runtime.bundle.spec import (
    DEFAULT_PATH,
    MASKED_PATHS,
    READONLY_PATHS,
    RunOptions,
    Volume,
    build_spec,
    exec_process,
    namespaces,
    parse_env_option,
    process_args,
    working_dir,
)
from lamina.runtime.bundle.users import ResolvedUser

SH = ("/bin/sh", "-c")
ENTRY_SHELL = (*SH, "exec_entry p1_entry")  # ENTRYPOINT exec_entry p1_entry
ENTRY_EXEC = ("exec_entry", "p1_entry")  # ENTRYPOINT ["exec_entry", "p1_entry"]
CMD_EXEC = ("exec_cmd", "p1_cmd")  # CMD ["exec_cmd", "p1_cmd"]
CMD_SHELL = (*SH, "exec_cmd p1_cmd")  # CMD exec_cmd p1_cmd

# The table of the Dockerfile reference ("Understand how CMD and ENTRYPOINT interact"),
# with the shell-form ENTRYPOINT rows spelled out: the CMD words become sh's $0, $1...
# which the shell form then ignores.
MATRIX = [
    (None, None, None),
    (None, CMD_EXEC, ["exec_cmd", "p1_cmd"]),
    (None, CMD_SHELL, [*SH, "exec_cmd p1_cmd"]),
    (ENTRY_SHELL, None, [*SH, "exec_entry p1_entry"]),
    (ENTRY_SHELL, CMD_EXEC, [*SH, "exec_entry p1_entry", "exec_cmd", "p1_cmd"]),
    (ENTRY_SHELL, CMD_SHELL, [*SH, "exec_entry p1_entry", *SH, "exec_cmd p1_cmd"]),
    (ENTRY_EXEC, None, ["exec_entry", "p1_entry"]),
    (ENTRY_EXEC, CMD_EXEC, ["exec_entry", "p1_entry", "exec_cmd", "p1_cmd"]),
    (ENTRY_EXEC, CMD_SHELL, ["exec_entry", "p1_entry", *SH, "exec_cmd p1_cmd"]),
    ((), CMD_EXEC, ["exec_cmd", "p1_cmd"]),  # ENTRYPOINT [] clears an inherited one
    (ENTRY_EXEC, (), ["exec_entry", "p1_entry"]),
    ((), (), None),
]


@pytest.mark.parametrize(("entrypoint", "cmd", "want"), MATRIX)
def test_entrypoint_cmd_matrix(
    entrypoint: tuple[str, ...] | None, cmd: tuple[str, ...] | None, want: list[str] | None
) -> None:
    config = ContainerConfig(entrypoint=entrypoint, cmd=cmd)
    if want is None:
        with pytest.raises(InvalidArgument, match="no command specified"):
            process_args(config, RunOptions())
    else:
        assert process_args(config, RunOptions()) == want


# (image entrypoint, image cmd, --entrypoint, args) -> process.args
OVERRIDES = [
    # `run IMG args` replaces CMD, keeps ENTRYPOINT
    (None, CMD_EXEC, None, ("ls", "-l"), ["ls", "-l"]),
    (ENTRY_EXEC, CMD_EXEC, None, ("x",), ["exec_entry", "p1_entry", "x"]),
    (None, None, None, ("true",), ["true"]),
    # --entrypoint replaces ENTRYPOINT and drops the image's CMD...
    (ENTRY_EXEC, CMD_EXEC, ("/bin/echo",), (), ["/bin/echo"]),
    (None, CMD_EXEC, ("/bin/echo",), (), ["/bin/echo"]),
    # ...unless args are given too
    (ENTRY_EXEC, CMD_EXEC, ("/bin/echo",), ("a", "b"), ["/bin/echo", "a", "b"]),
    # --entrypoint "" clears it
    (ENTRY_EXEC, CMD_EXEC, (), ("id",), ["id"]),
    (ENTRY_EXEC, CMD_EXEC, (), (), None),
    (None, None, (), (), None),
]


@pytest.mark.parametrize(("entrypoint", "cmd", "override", "args", "want"), OVERRIDES)
def test_entrypoint_and_args_overrides(
    entrypoint: tuple[str, ...] | None,
    cmd: tuple[str, ...] | None,
    override: tuple[str, ...] | None,
    args: tuple[str, ...],
    want: list[str] | None,
) -> None:
    config = ContainerConfig(entrypoint=entrypoint, cmd=cmd)
    options = RunOptions(args=args, entrypoint=override)
    if want is None:
        with pytest.raises(InvalidArgument, match="no command specified"):
            process_args(config, options)
    else:
        assert process_args(config, options) == want


ROOT = ResolvedUser()


def spec_for(
    config: ContainerConfig | None = None,
    options: RunOptions | None = None,
    *,
    user: ResolvedUser = ROOT,
    init_files: dict[str, str] | None = None,
    hostname: str = "abcdef012345",
) -> dict[str, Any]:
    return build_spec(
        config or ContainerConfig(cmd=("sh",)),
        options or RunOptions(),
        rootfs="/r/rootfs",
        user=user,
        init_files=init_files or {},
        hostname=hostname,
    )


@pytest.mark.parametrize(
    ("image_env", "opts", "tty", "want"),
    [
        ((), (), False, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "HOME=/"]),
        ((), (), True, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "TERM=xterm", "HOME=/"]),
        # the image's PATH replaces the default in place
        (("PATH=/x", "A=1"), (), False, ["PATH=/x", "HOSTNAME=h", "A=1", "HOME=/"]),
        # -e replaces the image's value in place, and adds new names at the end
        (
            ("A=1", "B=2"),
            ("B=3", "C=4"),
            False,
            [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "A=1", "B=3", "C=4", "HOME=/"],
        ),
        # -e may override HOSTNAME, TERM, HOME and PATH too
        (
            (),
            ("HOME=/h", "PATH=/p", "TERM=dumb"),
            True,
            ["PATH=/p", "HOSTNAME=h", "TERM=dumb", "HOME=/h"],
        ),
        # an empty value is a value; a bare name in the image sets nothing
        (("EMPTY=", "BARE"), (), False, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "EMPTY=", "HOME=/"]),
        # values keep '=' signs
        ((), ("X=a=b",), False, [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "X=a=b", "HOME=/"]),
    ],
)
def test_env(image_env: tuple[str, ...], opts: tuple[str, ...], tty: bool, want: list[str]) -> None:
    spec = spec_for(
        ContainerConfig(env=image_env, cmd=("sh",)), RunOptions(env=opts, tty=tty), hostname="h"
    )
    assert spec["process"]["env"] == want
    assert spec["process"]["terminal"] is tty


def test_home_comes_from_the_user() -> None:
    spec = spec_for(user=ResolvedUser(1000, 1000, (), "/home/u", "u"))
    assert "HOME=/home/u" in spec["process"]["env"]


def test_env_option_parsing() -> None:
    host = {"FOO": "bar"}
    assert parse_env_option("A=1", host) == "A=1"
    assert parse_env_option("FOO", host) == "FOO=bar"
    assert parse_env_option("MISSING", host) is None
    for bad in ("=x", "", "A\0=1"):
        with pytest.raises(InvalidArgument):
            parse_env_option(bad, host)
    with pytest.raises(InvalidArgument, match="NAME=value"):
        RunOptions(env=("NOEQUALS",))


@pytest.mark.parametrize(
    ("image_wd", "opt_wd", "want"),
    [
        ("", None, "/"),
        ("/app", None, "/app"),
        ("app", None, "/app"),
        ("/a/../b/", None, "/b"),
        ("/app", "/other", "/other"),
        ("", "/x/./y", "/x/y"),
    ],
)
def test_working_dir(image_wd: str, opt_wd: str | None, want: str) -> None:
    config = ContainerConfig(working_dir=image_wd, cmd=("sh",))
    options = RunOptions(workdir=opt_wd)
    assert working_dir(config, options) == want
    assert spec_for(config, options)["process"]["cwd"] == want


def test_relative_workdir_option_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        RunOptions(workdir="rel")


def test_user_and_capabilities() -> None:
    root = spec_for()["process"]
    assert root["user"] == {"uid": 0, "gid": 0}
    assert root["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert root["capabilities"]["effective"] == list(DEFAULT_CAPABILITIES)
    assert root["capabilities"]["permitted"] == list(DEFAULT_CAPABILITIES)
    assert "inheritable" not in root["capabilities"]  # CVE-2022-24769
    assert "CAP_SYS_ADMIN" not in root["capabilities"]["bounding"]
    assert len(DEFAULT_CAPABILITIES) == 14
    user = spec_for(user=ResolvedUser(1000, 100, (5, 27), "/home/u", "u"))["process"]
    assert user["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5, 27]}
    assert user["capabilities"] == {"bounding": list(DEFAULT_CAPABILITIES)}


def test_defaults_like_docker() -> None:
    spec = spec_for()
    assert spec["ociVersion"] == "1.0.2"
    assert spec["root"] == {"path": "/r/rootfs", "readonly": False}
    assert spec["hostname"] == "abcdef012345"
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}
    ]
    linux = spec["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"] == {
        "pids": {"limit": 2048},  # Podman's default
        "devices": [{"allow": False, "access": "rwm"}],
    }
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ]
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    assert "ro" in by_dest["/sys"]["options"]
    assert "ro" in by_dest["/sys/fs/cgroup"]["options"]
    assert by_dest["/proc"]["type"] == "proc"


@pytest.mark.parametrize(
    ("network", "want"),
    [("host", ["pid", "ipc", "uts", "mount"]), ("none", ["pid", "ipc", "uts", "mount", "network"])],
)
def test_namespaces(network: str, want: list[str]) -> None:
    spec = spec_for(options=RunOptions(network=network))
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == want
    assert all(set(ns) == {"type"} for ns in spec["linux"]["namespaces"])  # new, not joined


@pytest.mark.parametrize("network", ["", "-x", "a/b", "n" * 65, "with space"])
def test_unknown_network_is_refused(network: str) -> None:
    with pytest.raises(InvalidArgument, match="network"):
        RunOptions(network=network)


def test_a_bridge_network_joins_the_namespace_lamina_network_made() -> None:
    spec = spec_for(options=RunOptions(network="bridge"))
    assert spec["linux"]["namespaces"][-1] == {"type": "network"}
    ns = namespaces(RunOptions(network="backend"), "/root/runtime/netns/x")
    assert ns[-1] == {"type": "network", "path": "/root/runtime/netns/x"}


@pytest.mark.parametrize(
    "fields",
    [
        {"network": "host", "publish": ("80",)},
        {"network": "none", "publish_all": True},
        {"add_hosts": ("nocolon",)},
        {"add_hosts": ("bad_name:1.2.3.4",)},
    ],
)
def test_bad_network_options_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        RunOptions(**fields)  # type: ignore[arg-type]


def test_read_only_root() -> None:
    assert spec_for(options=RunOptions(read_only=True))["root"]["readonly"] is True


def test_init_files_and_volumes() -> None:
    init = {
        "/etc/hosts": "/c/hosts",
        "/etc/resolv.conf": "/c/resolv.conf",
        "/etc/hostname": "/c/hostname",
    }
    vols = (
        Volume("/data/b", "/mnt/a/b", True),
        Volume("/data/a", "/mnt/a"),
        Volume("/h/shm", "/dev/shm"),
        Volume("/h/res", "/etc/resolv.conf", True),
    )
    spec = spec_for(options=RunOptions(volumes=vols), init_files=init)
    mounts = spec["mounts"]
    dests = [m["destination"] for m in mounts]
    # the volume replaces the default /dev/shm and the init resolv.conf
    assert dests.count("/dev/shm") == 1 and dests.count("/etc/resolv.conf") == 1
    by_dest = {m["destination"]: m for m in mounts}
    assert by_dest["/dev/shm"]["source"] == "/h/shm"
    assert by_dest["/etc/resolv.conf"] == {
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": "/h/res",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert by_dest["/etc/hosts"] == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": "/c/hosts",
        "options": ["rbind", "rprivate"],
    }
    assert by_dest["/etc/hostname"]["source"] == "/c/hostname"
    # parents before children
    assert dests.index("/mnt/a") < dests.index("/mnt/a/b")
    assert by_dest["/mnt/a"]["options"] == ["rbind", "rprivate"]
    assert by_dest["/mnt/a/b"]["options"] == ["rbind", "rprivate", "ro"]


def test_init_files_must_be_known() -> None:
    with pytest.raises(InvalidArgument, match="init file"):
        spec_for(init_files={"/etc/shadow": "/x"})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/a:/b", Volume("/a", "/b", False)),
        ("/a:/b:ro", Volume("/a", "/b", True)),
        ("/a:/b:rw", Volume("/a", "/b", False)),
        ("/a/:/b/c/", Volume("/a", "/b/c", False)),
    ],
)
def test_volume_parse(text: str, want: Volume) -> None:
    assert Volume.parse(text) == want


@pytest.mark.parametrize(
    "text", ["/a", "a:/b", "/a:b", "/a:/b:rx", "/a:/", "/a:/b/../c", ":/b", "/a:/b:ro:x", ""]
)
def test_bad_volumes(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Volume.parse(text)


def test_duplicate_volume_destination() -> None:
    with pytest.raises(InvalidArgument, match="duplicate"):
        RunOptions(volumes=(Volume("/a", "/x"), Volume("/b", "/x")))


@pytest.mark.parametrize("name", ["a", "web-1", "my.host.example", "x" * 63])
def test_good_hostnames(name: str) -> None:
    assert spec_for(options=RunOptions(hostname=name), hostname=name)["hostname"] == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "x" * 64, "a..b", "a b", "a/b"])
def test_bad_hostnames(name: str) -> None:
    with pytest.raises(InvalidArgument, match="hostname"):
        RunOptions(hostname=name)


def test_rootfs_must_be_absolute() -> None:
    with pytest.raises(InvalidArgument):
        build_spec(
            ContainerConfig(cmd=("sh",)),
            RunOptions(),
            rootfs="rel",
            user=ROOT,
            init_files={},
            hostname="h",
        )


def test_exec_process() -> None:
    spec = spec_for(ContainerConfig(env=("A=1",), cmd=("sh",)), RunOptions(workdir="/w"))
    proc = exec_process(spec, ["ls", "-l"], env=["A=2", "B=3"], tty=True)
    assert proc["args"] == ["ls", "-l"]
    assert proc["terminal"] is True
    assert "A=2" in proc["env"] and "B=3" in proc["env"] and "TERM=xterm" in proc["env"]
    assert "A=1" not in proc["env"]
    assert proc["cwd"] == "/w"
    assert proc["user"] == {"uid": 0, "gid": 0}
    assert spec["process"]["args"] == ["sh"]  # the container's spec is unchanged
    other = exec_process(spec, ["id"], cwd="/tmp", user=ResolvedUser(5, 6))
    assert other["cwd"] == "/tmp" and other["user"] == {"uid": 5, "gid": 6}
    assert other["terminal"] is False
    assert "effective" not in other["capabilities"]
    with pytest.raises(InvalidArgument):
        exec_process(spec, [])
