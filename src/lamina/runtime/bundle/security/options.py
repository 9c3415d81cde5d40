"""What confines a container: seccomp, capabilities, no-new-privileges, devices,
``--privileged``; one home for ``lamina run``'s and the builder's RUN steps.

:class:`SecurityOptions` is what the user asked for (``--security-opt``,
``--cap-add``, ``--cap-drop``, ``--privileged``, ``--device``), validated on
construction; :func:`gather` reads what the host contributes (the seccomp profile,
device nodes, lamina's own bounding set) into a :class:`HostSecurity`;
:func:`apply` puts both into a runtime spec, purely. The defaults are Docker's:
its capability set, its seccomp policy (:mod:`lamina.runtime.bundle.security.seccomp`),
privileges may be gained through setuid files, no host devices.

``--privileged`` follows moby's ``daemon/oci_linux.go``: every capability, no seccomp,
every host device with a cgroup rule allowing all, no masked or read-only paths, and
``/sys`` and ``/sys/fs/cgroup`` mounted read-write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina.errors import InvalidArgument, Unsupported
from lamina.runtime.bundle.security import capabilities as caps_mod
from lamina.runtime.bundle.security.devices import Device, DeviceRequest

DEFAULT = "default"
UNCONFINED = "unconfined"


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    """``seccomp``: ``default`` (containers-common's profile with Docker's rules),
    ``unconfined`` or the absolute path of a Docker-format profile. Capability names
    are normalised (``CAP_`` prefix, upper case) on construction."""

    seccomp: str = DEFAULT
    no_new_privileges: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    devices: tuple[DeviceRequest, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "cap_add", caps_mod.normalize_all(self.cap_add))
        object.__setattr__(self, "cap_drop", caps_mod.normalize_all(self.cap_drop))
        object.__setattr__(self, "devices", tuple(self.devices))
        if self.seccomp not in (DEFAULT, UNCONFINED) and (
            not self.seccomp.startswith("/") or "\0" in self.seccomp
        ):
            raise InvalidArgument(
                f"seccomp profile path {self.seccomp!r} must be absolute",
                hint="use --security-opt seccomp=unconfined or seccomp=/path/profile.json",
            )

    def with_security_opts(self, items: Sequence[str], *, cwd: str = "/") -> SecurityOptions:
        """These options with ``--security-opt`` items applied, in order (a relative
        profile path is taken from ``cwd``)."""
        seccomp, nnp = self.seccomp, self.no_new_privileges
        for item in items:
            key, sep, value = _split_opt(item)
            if key == "seccomp":
                if not value:
                    raise InvalidArgument(
                        f"--security-opt {item!r} needs a value",
                        hint="use seccomp=unconfined or seccomp=/path/profile.json",
                    )
                seccomp = value if value == UNCONFINED else os.path.join(cwd, value)
            elif key == "no-new-privileges":
                if sep and value not in ("true", "false"):
                    raise InvalidArgument(
                        f"--security-opt {item!r}: the value must be true or false"
                    )
                nnp = not sep or value == "true"
            elif key in ("apparmor", "label", "systempaths", "mask", "unmask"):
                raise Unsupported(
                    f"--security-opt {key} is not supported by lamina",
                    hint="lamina supports seccomp=... and no-new-privileges",
                )
            else:
                raise InvalidArgument(
                    f"invalid --security-opt {item!r}",
                    hint="use seccomp=unconfined|FILE or no-new-privileges[=true|false]",
                )
        return SecurityOptions(
            seccomp=seccomp,
            no_new_privileges=nnp,
            cap_add=self.cap_add,
            cap_drop=self.cap_drop,
            privileged=self.privileged,
            devices=self.devices,
        )


def _split_opt(item: str) -> tuple[str, str, str]:
    # docker takes both `key=value` and the older `key:value`
    eq, colon = item.find("="), item.find(":")
    cut = min(i for i in (eq, colon, len(item)) if i >= 0)
    return item[:cut], item[cut : cut + 1], item[cut + 1 :]


@dataclass(frozen=True, slots=True)
class HostSecurity:
    """What the host contributes to a container's confinement: the seccomp profile
    to translate (None: unconfined), the device nodes, what "every capability" is
    (lamina's own bounding set), the architecture names and kernel version the
    profile's conditions test."""

    profile: Mapping[str, Any] | None = None
    devices: tuple[Device, ...] = ()
    all_capabilities: tuple[str, ...] = caps_mod.ALL_CAPABILITIES
    arch: str = "amd64"
    seccomp_arch: str = "SCMP_ARCH_X86_64"
    kernel: tuple[int, int] = (0, 0)
    foreign_arches: tuple[str, ...] = ()  # sub-architectures the kernel cannot run


def gather(options: SecurityOptions) -> HostSecurity:
    """Read what ``options`` need from the host (see :class:`HostSecurity`)."""
    from lamina.runtime.bundle.security import devices, seccomp

    profile: dict[str, Any] | None = None
    if not options.privileged and options.seccomp != UNCONFINED:
        if options.seccomp == DEFAULT:
            profile = seccomp.with_docker_rules(seccomp.load_profile(seccomp.DEFAULT_PROFILE))
        else:
            profile = seccomp.load_profile(options.seccomp)
    found: list[Device] = []
    if options.privileged:
        found = devices.host_devices()
    for request in options.devices:
        found += devices.resolve(request)
    arch, seccomp_arch = seccomp.native_arch()
    return HostSecurity(
        profile=profile,
        devices=tuple(found),
        all_capabilities=caps_mod.host_bounding_set(),
        arch=arch,
        seccomp_arch=seccomp_arch,
        kernel=seccomp.kernel_version(),
        foreign_arches=seccomp.foreign_arches(seccomp_arch) if profile is not None else (),
    )


def bounding_set(options: SecurityOptions, host: HostSecurity) -> list[str]:
    return caps_mod.effective_set(
        options.cap_add,
        options.cap_drop,
        privileged=options.privileged,
        every=host.all_capabilities,
    )


def apply(spec: dict[str, Any], options: SecurityOptions, host: HostSecurity, *, uid: int) -> None:
    """Set the process's capabilities and no-new-privileges, ``linux.seccomp``, the
    devices and, for ``--privileged``, the unmasked paths and writable ``/sys`` in
    ``spec`` (a runtime spec as :func:`lamina.runtime.bundle.spec.build_spec` makes
    it)."""
    from lamina.runtime.bundle.security.seccomp import translate

    caps = bounding_set(options, host)
    process = spec["process"]
    process["capabilities"] = caps_mod.process_capabilities(caps, uid)
    process["noNewPrivileges"] = options.no_new_privileges
    linux = spec["linux"]
    if host.profile is not None and not options.privileged:
        seccomp = translate(
            host.profile,
            capabilities=caps,
            arch=host.arch,
            seccomp_arch=host.seccomp_arch,
            kernel=host.kernel,
            skip_arches=host.foreign_arches,
        )
        if seccomp is not None:
            linux["seccomp"] = seccomp
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    if options.privileged:
        rules[:] = [{"allow": True, "access": "rwm"}]
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        for m in spec["mounts"]:
            if m.get("type") in ("sysfs", "cgroup"):
                m["options"] = [o for o in m.get("options", []) if o != "ro"]
    else:
        rules.extend(d.cgroup_rule() for d in host.devices)
    if host.devices:
        # a --device on a path the host's set already has replaces it
        by_path = {d.path: d for d in host.devices}
        linux["devices"] = [d.to_spec() for d in by_path.values()]
