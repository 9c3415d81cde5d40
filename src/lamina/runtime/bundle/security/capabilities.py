"""Capabilities of a container: Docker's default set, ``--cap-add``, ``--cap-drop``,
``--privileged`` (pure; the host's last capability is passed in).

Names are accepted as Docker does (moby ``oci/caps``): any case, with or without the
``CAP_`` prefix, and ``ALL``. Rules, in order: ``--privileged`` gets every capability;
``--cap-add ALL`` starts from every capability minus the dropped ones; ``--cap-drop
ALL`` keeps only the added ones; otherwise the default set minus the dropped plus the
added. "Every capability" is lamina's own bounding set, as Podman reads it: the
runtime cannot give what its caller lacks (this machine's bounding set lacks
CAP_SYS_RESOURCE, and a runtime asked for it fails with EPERM).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lamina.errors import InvalidArgument

# capability(7) numbers 0..40, in order (linux/capability.h).
ALL_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# Docker's default capability set (moby oci/caps/defaults.go), Podman's too.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL = "ALL"
STATUS_FILE = "/proc/self/status"


def from_mask(mask: int) -> tuple[str, ...]:
    """The names of the capabilities whose bits are set in ``mask``."""
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


def host_bounding_set(status_file: str = STATUS_FILE) -> tuple[str, ...]:
    """This process's bounding set (``CapBnd`` of ``/proc/self/status``): every
    capability a runtime it starts can give."""
    try:
        with open(status_file, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return from_mask(int(line.split()[1], 16))
    except (OSError, ValueError, IndexError):
        pass
    return ALL_CAPABILITIES


def normalize(name: str) -> str:
    """``sys_admin``, ``CAP_SYS_ADMIN``, ``Sys_Admin`` -> ``CAP_SYS_ADMIN``; ``all`` -> ALL."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in ALL_CAPABILITIES:
        raise InvalidArgument(
            f"unknown capability {name!r}",
            hint="use a name from capabilities(7), e.g. NET_ADMIN or CAP_SYS_PTRACE, or ALL",
        )
    return full


def normalize_all(names: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        full = normalize(name)
        if full not in out:
            out.append(full)
    return tuple(out)


def effective_set(
    add: Sequence[str] = (),
    drop: Sequence[str] = (),
    *,
    privileged: bool = False,
    every: Sequence[str] = ALL_CAPABILITIES,
) -> list[str]:
    """The bounding set of a container (see the module doc for the rules); ``every``
    is what "all" means here (:func:`host_bounding_set`)."""
    if privileged:
        return list(every)
    adds = normalize_all(add)
    drops = normalize_all(drop)
    if ALL in adds:
        return [c for c in every if c not in drops]
    added = [c for c in adds if c != ALL]
    if ALL in drops:
        return added
    caps = [c for c in DEFAULT_CAPABILITIES if c not in drops]
    caps += [c for c in added if c not in caps]
    return caps


def process_capabilities(caps: Sequence[str], uid: int) -> dict[str, list[str]]:
    """The runtime-spec ``process.capabilities`` of a process running as ``uid``."""
    if uid == 0:
        return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    # A non-root process gets no effective or permitted capabilities, as an execve by
    # a non-root user would give it; inheritable stays empty everywhere
    # (CVE-2022-24769).
    return {"bounding": list(caps)}
