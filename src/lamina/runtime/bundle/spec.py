"""The OCI runtime-spec ``config.json`` of a container (pure: values in, a dict out).

:func:`build_spec` turns an image's :class:`~lamina.oci.config.ContainerConfig` and the
user's :class:`RunOptions` into the document runc and crun read, following what Docker
does so that images behave as their authors expect:

- ``process.args``: ENTRYPOINT + CMD (Dockerfile reference, "Understand how CMD and
  ENTRYPOINT interact"): arguments after the image replace CMD; ``--entrypoint``
  replaces ENTRYPOINT *and* drops the image's CMD; nothing at all is an error.
- ``process.env``: ``PATH`` (default when the image has none), ``HOSTNAME``, ``TERM``
  with a tty, then the image's ``Env``, then ``-e`` (each replacing an earlier value of
  the same name in place), ``HOME`` from the user's passwd entry when still unset.
- mounts, namespaces, masked and read-only paths and rlimits as in Docker's default
  spec (moby ``oci/defaults.go``) on top of the runtime-spec's ``config-linux.md``;
  capabilities, seccomp, devices and ``--privileged`` from
  :mod:`lamina.runtime.bundle.security.options`.

No function here touches the filesystem: paths that must exist (volume sources, the
init files, the WORKDIR) are checked or made by :mod:`lamina.runtime.lifecycle`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina.errors import InvalidArgument
from lamina.runtime.bundle.resources import Resources, swap_accounting
from lamina.runtime.bundle.security.capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    process_capabilities,
)
from lamina.runtime.bundle.security.options import HostSecurity, SecurityOptions
from lamina.runtime.bundle.security.options import apply as apply_security

if TYPE_CHECKING:
    from lamina.oci.config import ContainerConfig
    from lamina.runtime.bundle.users import ResolvedUser

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# --network words; any other is the name of a network (lamina.network.config's rule).
NETWORKS = ("host", "none", "bridge")
DEFAULT_NETWORK_MODE = "bridge"  # a private namespace on the default bridge network
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NOFILE_LIMIT = 1048576  # what dockerd's containers get (containerd's unit sets it)

# moby oci/defaults.go: paths the container must not read (kernel memory, keys,
# timers leaking host activity) and kernel knobs it must not write.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# The files of the init layer, bind-mounted from the container directory
# (key = name of the file there, value = where it appears in the container).
INIT_FILES = {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf", "hostname": "/etc/hostname"}

_ENV_NAME = re.compile(r"[^=\0]+")
# RFC 1123 host name: labels of letters, digits and '-', not starting or ending with '-'.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Volume:
    """A ``-v HOST:CONTAINER[:ro]`` bind mount; both paths absolute and clean."""

    host: str
    container: str
    read_only: bool = False

    def __post_init__(self) -> None:
        for what, path in (("host", self.host), ("container", self.container)):
            if not path.startswith("/") or "\0" in path:
                raise InvalidArgument(
                    f"volume {what} path {path!r} must be absolute",
                    hint="use -v /host/path:/container/path[:ro]",
                )
        if ".." in self.container.split("/"):
            raise InvalidArgument(f"volume container path {self.container!r} contains '..'")
        object.__setattr__(self, "host", posixpath.normpath(self.host))
        object.__setattr__(self, "container", posixpath.normpath(self.container))
        if self.container == "/":
            raise InvalidArgument("a volume cannot be mounted over the container's root '/'")

    @classmethod
    def parse(cls, text: str) -> Volume:
        """Parse ``HOST:CONTAINER``, ``HOST:CONTAINER:ro`` or ``HOST:CONTAINER:rw``."""
        parts = text.split(":")
        read_only = False
        if len(parts) == 3:
            mode = parts.pop()
            if mode not in ("ro", "rw"):
                raise InvalidArgument(
                    f"volume {text!r}: unknown mode {mode!r}", hint="the mode is ro or rw"
                )
            read_only = mode == "ro"
        if len(parts) != 2 or not all(parts):
            raise InvalidArgument(
                f"volume {text!r} is not HOST:CONTAINER[:ro]",
                hint="use -v /host/path:/container/path[:ro]",
            )
        return cls(parts[0], parts[1], read_only)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``lamina run`` was asked for, on top of the image's defaults.

    ``entrypoint``: None keeps the image's; a tuple replaces it (``--entrypoint ""`` is
    the empty tuple, which clears it). ``args``: the words after the image reference.
    ``env``: ``NAME=value`` items (the CLI resolves a bare ``-e NAME`` with
    :func:`parse_env_option`). ``workdir`` must be absolute. ``user`` is the raw
    ``-u`` text (resolved by :func:`lamina.runtime.bundle.users.resolve_user`).
    ``security``: seccomp, capabilities, devices, ``--privileged``.
    ``network``: ``bridge`` (the default network), ``host``, ``none`` or a network's
    name; ``publish`` the ``-p`` items, ``publish_all`` is ``-P``; ``add_hosts``
    (``NAME:IP``), ``dns`` and ``dns_search`` change the init files.
    ``resources``: the limits (:mod:`lamina.runtime.bundle.resources`).
    """

    args: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    network: str = DEFAULT_NETWORK_MODE
    read_only: bool = False
    tty: bool = False
    interactive: bool = False
    volumes: tuple[Volume, ...] = field(default=())
    security: SecurityOptions = field(default_factory=SecurityOptions)
    publish: tuple[str, ...] = ()
    publish_all: bool = False
    add_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    # --init: the host path of an init (catatonit or tini), bound read-only at INIT_PATH
    # and run as PID 1 with the command as its child (it reaps zombies, forwards signals)
    init: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", tuple(self.env))
        object.__setattr__(self, "volumes", tuple(self.volumes))
        if self.entrypoint is not None:
            object.__setattr__(self, "entrypoint", tuple(self.entrypoint))
        for name in ("publish", "add_hosts", "dns", "dns_search"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.network not in NETWORKS and not _NETWORK_NAME.fullmatch(self.network):
            raise InvalidArgument(
                f"unknown network {self.network!r}",
                hint="use --network bridge, host, none or the name of a network",
            )
        if (self.publish or self.publish_all) and self.network in ("host", "none"):
            raise InvalidArgument(
                f"ports cannot be published with --network {self.network}",
                hint="drop -p/-P, or use a bridge network",
            )
        for item in self.add_hosts:
            host, sep, address = item.partition(":")
            if not sep or not address or not host:
                raise InvalidArgument(
                    f"--add-host {item!r} is not NAME:IP", hint="e.g. --add-host db:10.0.0.5"
                )
            check_hostname(host)
        for item in self.env:
            check_env_item(item)
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise InvalidArgument(
                f"the working directory {self.workdir!r} is invalid, it must be absolute"
            )
        if self.hostname is not None:
            check_hostname(self.hostname)
        if self.user is not None and (not self.user or "\0" in self.user):
            raise InvalidArgument("the user (-u) must not be empty")
        seen: set[str] = set()
        for dest in [v.container for v in self.volumes] + [t.path for t in self.resources.tmpfs]:
            if dest in seen:
                raise InvalidArgument(f"duplicate mount point {dest!r}")
            seen.add(dest)


def check_env_item(item: str) -> None:
    name, eq, _ = item.partition("=")
    if not eq or not _ENV_NAME.fullmatch(name) or "\0" in item:
        raise InvalidArgument(
            f"environment item {item!r} is not NAME=value", hint="use -e NAME=value"
        )


def check_hostname(name: str) -> None:
    if not _HOSTNAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid hostname {name!r}", hint="use letters, digits, '-' and '.' (RFC 1123)"
        )


def parse_env_option(item: str, host_env: Mapping[str, str]) -> str | None:
    """``-e NAME=value`` as is; a bare ``-e NAME`` takes the host's value, or is dropped
    (None) when the host has none, as with ``docker run``."""
    if "=" in item:
        check_env_item(item)
        return item
    if not item or "\0" in item:
        raise InvalidArgument(f"environment item {item!r} is not NAME=value")
    value = host_env.get(item)
    return None if value is None else f"{item}={value}"


# ---------------------------------------------------------------------- process


def process_args(config: ContainerConfig, options: RunOptions) -> list[str]:
    """ENTRYPOINT + CMD exactly as ``docker run`` combines them."""
    if options.entrypoint is not None:
        entrypoint: Sequence[str] = options.entrypoint
        # A new entrypoint resets the image's CMD (moby daemon/create.go: "a new
        # entrypoint resets cmd unless cmd is given too").
        cmd: Sequence[str] = options.args
    else:
        entrypoint = config.entrypoint or ()
        cmd = options.args if options.args else (config.cmd or ())
    args = [*entrypoint, *cmd]
    if not args:
        raise InvalidArgument(
            "no command specified",
            hint="give a command after the image, or set CMD/ENTRYPOINT in the image",
        )
    return args


def _replace_or_append(env: list[str], items: Iterable[str]) -> None:
    index = {item.partition("=")[0]: i for i, item in enumerate(env)}
    for item in items:
        name = item.partition("=")[0]
        at = index.get(name)
        if at is None:
            index[name] = len(env)
            env.append(item)
        else:
            env[at] = item


def process_env(
    config: ContainerConfig, options: RunOptions, *, hostname: str, home: str
) -> list[str]:
    """The container's environment, in Docker's order (daemon defaults, image, -e)."""
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if options.tty:
        env.append("TERM=xterm")
    image_env = [item for item in config.env if "=" in item]  # a bare name sets nothing
    _replace_or_append(env, image_env)
    _replace_or_append(env, options.env)
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={home or '/'}")
    return env


def working_dir(config: ContainerConfig, options: RunOptions) -> str:
    """``-w``, else the image's WORKDIR, else ``/``; absolute and normalised."""
    path = options.workdir if options.workdir is not None else config.working_dir or "/"
    if "\0" in path:
        raise InvalidArgument(f"working directory {path!r} contains NUL")
    return posixpath.normpath(posixpath.join("/", path))


# ---------------------------------------------------------------------- mounts


def default_mounts() -> list[dict[str, Any]]:
    """Docker's default mounts (moby oci/defaults.go DefaultLinuxSpec)."""
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
    ]


# Where --init's binary appears inside (as Docker's /sbin/docker-init, podman's
# /run/podman-init): under /run, so the image's own files are never shadowed.
INIT_PATH = "/run/lamina-init"


def bind_mount(source: str, destination: str, *, read_only: bool = False) -> dict[str, Any]:
    options = ["rbind", "rprivate"]
    if read_only:
        options.append("ro")
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def mounts(options: RunOptions, init_files: Mapping[str, str]) -> list[dict[str, Any]]:
    """Default mounts, then the init files, then volumes (parents before children).

    A volume on the same destination as a default or init mount replaces it (as with
    ``docker run -v x:/dev/shm``). ``init_files`` maps a container path (a value of
    :data:`INIT_FILES`) to the host file holding it.
    """
    limits = options.resources
    extra = [bind_mount(v.host, v.container, read_only=v.read_only) for v in options.volumes]
    extra += [t.mount() for t in limits.tmpfs]  # --tmpfs: like a volume, but a tmpfs
    taken = {m["destination"] for m in extra}
    out = [m for m in default_mounts() if m["destination"] not in taken]
    shm = limits.shm_option()
    for m in out:
        if shm is not None and m["destination"] == "/dev/shm":
            m["options"] = [o for o in m["options"] if not o.startswith("size=")] + [shm]
    for dest in sorted(init_files):
        if dest not in taken:
            out.append(bind_mount(init_files[dest], dest))
    extra.sort(key=lambda m: (m["destination"].count("/"), m["destination"]))
    out.extend(extra)
    return out


def namespaces(options: RunOptions, netns: str | None = None) -> list[dict[str, str]]:
    """Docker's namespaces; the network one is ``netns`` (a bind-mounted namespace that
    lamina.network wired) when given, else a new, empty one (only a loopback device),
    and none of its own with ``--network host``."""
    out = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if options.network != "host":
        out.append({"type": "network", "path": netns} if netns else {"type": "network"})
    return out


# ---------------------------------------------------------------------- the document


def build_spec(
    config: ContainerConfig,
    options: RunOptions,
    *,
    rootfs: str,
    user: ResolvedUser,
    init_files: Mapping[str, str],
    hostname: str,
    cwd: str | None = None,
    cgroups_path: str | None = None,
    nofile: int = NOFILE_LIMIT,
    host_security: HostSecurity | None = None,
    netns: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of the bundle (runtime-spec 1.0.2, config.md/config-linux.md).

    ``user`` comes from :func:`lamina.runtime.bundle.users.resolve_user`; ``cwd``, when given,
    is the WORKDIR as :func:`lamina.runtime.bundle.users.prepare_workdir` resolved it inside
    the root (default: :func:`working_dir`); ``init_files`` maps container paths to the
    host files to bind there (see :data:`INIT_FILES`). ``nofile`` is RLIMIT_NOFILE
    (soft = hard); a runtime cannot raise it above its own hard limit, so callers pass
    at most theirs. ``host_security`` is what
    :func:`lamina.runtime.bundle.security.gather` read for ``options.security``: the
    seccomp profile above all; without it the spec has no seccomp filter.
    ``netns`` is the path of the network namespace to join.
    """
    if not rootfs.startswith("/"):
        raise InvalidArgument(f"rootfs {rootfs!r} must be an absolute path")
    check_hostname(hostname)
    for dest in init_files:
        if dest not in INIT_FILES.values():
            raise InvalidArgument(f"{dest!r} is not an init file")
    proc_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        proc_user["additionalGids"] = list(user.additional_gids)
    process: dict[str, Any] = {
        "terminal": options.tty,
        "user": proc_user,
        "args": [INIT_PATH, "--", *process_args(config, options)]
        if options.init
        else process_args(config, options),
        "env": process_env(config, options, hostname=hostname, home=user.home),
        "cwd": cwd if cwd is not None else working_dir(config, options),
        "rlimits": options.resources.rlimits(nofile),
        # capabilities and noNewPrivileges: apply_security below
    }
    limits = options.resources
    linux: dict[str, Any] = {
        "namespaces": namespaces(options, netns),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        # The limits (the pids one by default), and Docker's device rule: deny every
        # device but the runtime's defaults (null, zero, tty, pts...), which runc and
        # crun add themselves. Without it CAP_MKNOD would open the host's disks.
        "resources": {
            **limits.linux_resources(
                limits.memory is not None and limits.memory_swap is None and swap_accounting()
            ),
            "devices": [{"allow": False, "access": "rwm"}],
        },
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    spec = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": options.read_only},
        "hostname": hostname,
        "mounts": mounts(options, init_files)
        + ([bind_mount(options.init, INIT_PATH, read_only=True)] if options.init else []),
        "linux": linux,
    }
    apply_security(spec, options.security, host_security or HostSecurity(), uid=user.uid)
    return spec


def exec_process(
    spec: Mapping[str, Any],
    args: Sequence[str],
    *,
    env: Sequence[str] = (),
    tty: bool = False,
    cwd: str | None = None,
    user: ResolvedUser | None = None,
    privileged: bool = False,
    all_capabilities: Sequence[str] = ALL_CAPABILITIES,
) -> dict[str, Any]:
    """The ``process.json`` of ``runc exec``: the container's process with new args.

    ``env`` items replace or extend the container's environment; ``user`` (resolved in
    the container's root) replaces its user, with the container's capabilities as a
    process of that user gets them; ``privileged`` gives it ``all_capabilities``
    (``docker exec --privileged``). The container's
    seccomp filter applies all the same: runc and crun take it from the container.
    """
    if not args:
        raise InvalidArgument("no command given to exec", hint="lamina exec CONTAINER CMD...")
    for item in env:
        check_env_item(item)
    base = spec.get("process")
    if not isinstance(base, dict):
        raise InvalidArgument("the container's config.json has no process")
    process: dict[str, Any] = {key: value for key, value in base.items()}
    process["args"] = list(args)
    process["terminal"] = tty
    new_env = list(base.get("env") or [])
    if tty and not any(item.startswith("TERM=") for item in new_env):
        new_env.append("TERM=xterm")
    _replace_or_append(new_env, env)
    process["env"] = new_env
    if cwd is not None:
        if not cwd.startswith("/"):
            raise InvalidArgument(f"the working directory {cwd!r} must be absolute")
        process["cwd"] = posixpath.normpath(cwd)
    if user is not None:
        proc_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            proc_user["additionalGids"] = list(user.additional_gids)
        process["user"] = proc_user
    base_caps = base.get("capabilities") or {}
    bounding = base_caps.get("bounding") if isinstance(base_caps, dict) else None
    caps = list(bounding) if isinstance(bounding, list) else list(DEFAULT_CAPABILITIES)
    if privileged:
        caps = list(all_capabilities)
    if user is not None or privileged:
        uid = user.uid if user is not None else int((base.get("user") or {}).get("uid", 0))
        process["capabilities"] = process_capabilities(caps, uid)
    return process
