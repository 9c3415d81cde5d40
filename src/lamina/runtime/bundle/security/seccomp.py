"""Seccomp: a Docker-format profile translated to the runtime-spec's ``linux.seccomp``.

The default profile is the one Podman, Buildah and CRI-O apply, shipped by
containers-common (Debian ``golang-github-containers-common``) at
:data:`DEFAULT_PROFILE`. Its format is Docker's (moby ``profiles/seccomp``): rules
carry ``includes``/``excludes`` conditions that are resolved *before* the runtime sees
them, as containers-common's ``pkg/seccomp`` does (runtime-spec config-linux.md has no
conditions):

- ``arches``: Go architecture names (``amd64``, ``arm64``...) of the host;
- ``caps``: capabilities, against the container's *bounding* set (a rule that
  includes several needs all of them; one that excludes several drops on any);
- ``minKernel``: ``"4.8"``-style, against the running kernel;
- ``archMap``: the native architecture's entry and its sub-architectures become
  ``architectures`` (an explicit ``architectures`` list is taken as it is), less those
  the kernel cannot run: most x86_64 kernels are built without the x32 ABI, and a
  filter for x32 makes runc's start about 10 ms slower for nothing (a call of an
  architecture the filter lacks is refused all the same).

containers-common's profile is more permissive than Docker's on a few calls that an
attacker in a container reaches for first (issue 12): it allows keyrings, which the
kernel does not namespace, ``unshare``/``clone`` of new namespaces (a user namespace
gives back every capability inside it), and answers io_uring with ENOSYS.
:data:`DOCKER_RULES` puts Docker's answer back on those calls, in the profile's own
format; they replace whatever the file says about the same names. A profile given
with ``--security-opt seccomp=FILE`` is the user's policy and is taken as it is.

Pure apart from :func:`load_profile` (reads a file, capped).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from lamina.errors import InvalidArgument, InvalidFormat, NotFound

DEFAULT_PROFILE = "/usr/share/containers/seccomp.json"
PROFILE_PACKAGE = "golang-github-containers-common"
MAX_PROFILE_BYTES = 4 << 20

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)
# uname -m -> (the Go name the profiles' "arches" use, the libseccomp name of archMap)
NATIVE_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}

_EPERM = errno.EPERM
_ENOSYS = errno.ENOSYS
_SYS_ADMIN = {"caps": ["CAP_SYS_ADMIN"]}
# clone(2) flags that make a new namespace (linux/sched.h): NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
_NS_MASK = sum(CLONE_NAMESPACE_FLAGS)
# Namespaces and mounts: only for a container that has CAP_SYS_ADMIN (Docker's rule).
_ADMIN_CALLS = [
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "move_mount",
    "open_tree",
    "pivot_root",
    "setns",
    "umount",
    "umount2",
    "unshare",
]
_S390 = ["s390", "s390x"]


def _clone_rules() -> list[dict[str, Any]]:
    """clone without namespace flags for everyone, with them only under CAP_SYS_ADMIN;
    clone3 hides its flags in memory seccomp cannot read, so without CAP_SYS_ADMIN it
    answers ENOSYS and libc falls back to clone (Docker's rules). s390 swaps the first
    two arguments of clone."""
    out: list[dict[str, Any]] = []
    for index, where in (
        (0, {"excludes": {"arches": _S390}}),
        (1, {"includes": {"arches": _S390}}),
    ):
        cond: dict[str, Any] = {
            "includes": dict(where.get("includes", {})),
            "excludes": {**where.get("excludes", {}), **_SYS_ADMIN},
        }
        out.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": index, "value": _NS_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
                ],
                **cond,
            }
        )
        # EPERM (not the profile's default ENOSYS) for each namespace flag, as Docker
        for flag in CLONE_NAMESPACE_FLAGS:
            out.append(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": _EPERM,
                    "args": [
                        {
                            "index": index,
                            "value": flag,
                            "valueTwo": flag,
                            "op": "SCMP_CMP_MASKED_EQ",
                        }
                    ],
                    **cond,
                }
            )
    out += [
        {"names": ["clone", "clone3"], "action": "SCMP_ACT_ALLOW", "includes": _SYS_ADMIN},
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": _ENOSYS,
            "excludes": _SYS_ADMIN,
        },
    ]
    return out


DOCKER_RULES: tuple[dict[str, Any], ...] = (
    # Keyrings are not namespaced: a container could read or fill the host's.
    {
        "names": ["add_key", "keyctl", "request_key"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": _EPERM,
    },
    # io_uring bypasses the syscall filter for the operations it submits and has been
    # the kernel's most exploited interface; Docker denies it since 25.0.
    {
        "names": ["io_uring_enter", "io_uring_register", "io_uring_setup"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": _EPERM,
    },
    {"names": _ADMIN_CALLS, "action": "SCMP_ACT_ALLOW", "includes": _SYS_ADMIN},
    {"names": _ADMIN_CALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM, "excludes": _SYS_ADMIN},
    *_clone_rules(),
)


# ---------------------------------------------------------------------- loading


def load_profile(path: str) -> dict[str, Any]:
    """The profile at ``path`` (JSON, at most :data:`MAX_PROFILE_BYTES`)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        if path == DEFAULT_PROFILE:
            raise NotFound(
                f"the default seccomp profile {path} is missing",
                hint=f"install it (apt-get install {PROFILE_PACKAGE}), "
                "or run with --security-opt seccomp=unconfined",
            ) from None
        raise NotFound(f"seccomp profile {path!r} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read seccomp profile {path!r}: {exc.strerror}") from exc
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidFormat(f"seccomp profile {path!r} is over {MAX_PROFILE_BYTES >> 20} MiB")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidFormat(f"seccomp profile {path!r} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidFormat(f"seccomp profile {path!r} is not a JSON object")
    return doc


def with_docker_rules(profile: Mapping[str, Any]) -> dict[str, Any]:
    """``profile`` with :data:`DOCKER_RULES` in place of its own rules for those names."""
    ours = {name for rule in DOCKER_RULES for name in rule["names"]}
    rules: list[dict[str, Any]] = []
    for rule in _rules(profile):
        names = [n for n in _names(rule) if n not in ours]
        if names:
            rules.append({**rule, "names": names, "name": ""})
    return {**profile, "syscalls": [*rules, *DOCKER_RULES]}


# ---------------------------------------------------------------------- translation


X32 = "SCMP_ARCH_X32"
_X32_SYSCALL_BIT = 0x40000000
_X32_GETPID = _X32_SYSCALL_BIT | 39


def kernel_runs_x32() -> bool:
    """Whether this x86_64 kernel runs x32 system calls (CONFIG_X86_X32_ABI and not
    ``syscall.x32=n``): ask it with an x32 getpid."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(_X32_GETPID)) >= 0


def foreign_arches(seccomp_arch: str) -> tuple[str, ...]:
    """The sub-architectures of ``seccomp_arch`` this kernel cannot run."""
    if seccomp_arch == "SCMP_ARCH_X86_64" and not kernel_runs_x32():
        return (X32,)
    return ()


def native_arch(machine: str | None = None) -> tuple[str, str]:
    """(Go name, libseccomp name) of this host's architecture."""
    machine = machine or os.uname().machine
    return NATIVE_ARCHES.get(machine, (machine, f"SCMP_ARCH_{machine.upper()}"))


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """``6.18.0-1-amd64`` -> (6, 18); the leading digits of each part count."""
    release = release or os.uname().release

    def lead(part: str) -> int:
        digits = ""
        for c in part:
            if not c.isdigit():
                break
            digits += c
        return int(digits or 0)

    parts = release.split(".")
    return lead(parts[0]), lead(parts[1]) if len(parts) > 1 else 0


def translate(
    profile: Mapping[str, Any],
    *,
    capabilities: Collection[str],
    arch: str,
    seccomp_arch: str,
    kernel: tuple[int, int],
    skip_arches: Collection[str] = (),
) -> dict[str, Any] | None:
    """The ``linux.seccomp`` object of ``profile`` for a container whose bounding set
    is ``capabilities`` on a host of ``arch``/``seccomp_arch`` running ``kernel`` (that
    cannot run ``skip_arches``: :func:`foreign_arches`); None when the profile asks for
    nothing (no default action and no rules: unconfined, as containers-common reads
    it)."""
    default = profile.get("defaultAction", "")
    rules = _rules(profile)
    if not default and not rules:
        return None
    _check_action(default, "defaultAction")
    out: dict[str, Any] = {"defaultAction": default}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = _errno(profile["defaultErrnoRet"], "defaultErrnoRet")
    arches = [a for a in _architectures(profile, seccomp_arch) if a not in skip_arches]
    if arches:
        out["architectures"] = arches
    syscalls = []
    for i, rule in enumerate(rules):
        if _applies(rule, capabilities, arch, kernel, where=f"syscalls[{i}]"):
            syscalls.append(_syscall(rule, where=f"syscalls[{i}]"))
    out["syscalls"] = syscalls
    return out


def _rules(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise InvalidFormat("seccomp profile: 'syscalls' must be a list of objects")
    return rules


def _names(rule: Mapping[str, Any]) -> list[str]:
    names = rule.get("names") or []
    name = rule.get("name") or ""
    if name and names:
        raise InvalidFormat("seccomp profile: a rule has both 'name' and 'names'")
    if name:
        names = [name]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InvalidFormat("seccomp profile: 'names' must be a list of syscall names")
    return names


def _check_action(action: object, where: str) -> None:
    if action not in ACTIONS:
        raise InvalidFormat(f"seccomp profile: {where}: unknown action {action!r}")


def _errno(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 4096:
        raise InvalidFormat(f"seccomp profile: {where} must be an errno number")
    return value


def _architectures(profile: Mapping[str, Any], seccomp_arch: str) -> list[str]:
    listed = profile.get("architectures") or []
    arch_map = profile.get("archMap") or []
    if listed and arch_map:
        raise InvalidFormat("seccomp profile: give either 'architectures' or 'archMap', not both")
    if listed:
        if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
            raise InvalidFormat("seccomp profile: 'architectures' must be a list of names")
        return list(listed)
    if not isinstance(arch_map, list):
        raise InvalidFormat("seccomp profile: 'archMap' must be a list")
    for entry in arch_map:
        if isinstance(entry, dict) and entry.get("architecture") == seccomp_arch:
            subs = entry.get("subArchitectures") or []
            return [seccomp_arch, *(s for s in subs if isinstance(s, str))]
    return []  # the runtime takes the native one


def _condition(rule: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    cond = rule.get(key) or {}
    if not isinstance(cond, dict):
        raise InvalidFormat(f"seccomp profile: {where}.{key} must be an object")
    for field in ("caps", "arches"):
        values = cond.get(field) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidFormat(f"seccomp profile: {where}.{key}.{field} must be a list")
    return cond


def _min_kernel(text: object, where: str) -> tuple[int, int]:
    if not isinstance(text, str):
        raise InvalidFormat(f"seccomp profile: {where}.minKernel must be a string like '4.8'")
    major, _, minor = text.partition(".")
    if not major.isdigit() or not (minor.isdigit() or minor == ""):
        raise InvalidFormat(f"seccomp profile: {where}.minKernel {text!r} is not like '4.8'")
    return int(major), int(minor or 0)


def _applies(
    rule: Mapping[str, Any],
    caps: Collection[str],
    arch: str,
    kernel: tuple[int, int],
    *,
    where: str,
) -> bool:
    inc = _condition(rule, "includes", where)
    exc = _condition(rule, "excludes", where)
    if arch in (exc.get("arches") or ()):
        return False
    if any(c in caps for c in exc.get("caps") or ()):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if not all(c in caps for c in inc.get("caps") or ()):
        return False
    return not (inc.get("minKernel") and kernel < _min_kernel(inc["minKernel"], where))


def _syscall(rule: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    action = rule.get("action")
    _check_action(action, where)
    out: dict[str, Any] = {"names": _names(rule), "action": action}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = _errno(rule["errnoRet"], f"{where}.errnoRet")
    args = list(_args(rule.get("args") or [], where))
    if args:
        out["args"] = args
    return out


def _args(args: object, where: str) -> Iterable[dict[str, Any]]:
    if not isinstance(args, list):
        raise InvalidFormat(f"seccomp profile: {where}.args must be a list")
    for arg in args:
        if not isinstance(arg, dict) or arg.get("op") not in OPERATORS:
            raise InvalidFormat(f"seccomp profile: {where}: bad argument filter {arg!r}")
        values = [arg.get("index"), arg.get("value", 0), arg.get("valueTwo", 0)]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise InvalidFormat(f"seccomp profile: {where}: bad argument filter {arg!r}")
        yield {"index": values[0], "value": values[1], "valueTwo": values[2], "op": arg["op"]}
