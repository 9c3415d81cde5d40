"""Host devices in a container: ``--device HOST[:CTR[:PERMS]]`` and ``--privileged``.

A device reaches a container in two parts (runtime-spec config-linux.md): a
``linux.devices`` entry makes the node in the container's ``/dev`` (type, major,
minor, mode, owner), and a ``linux.resources.devices`` rule lets the device cgroup
allow the access (``r``, ``w``, ``m`` = mknod). Parsing is pure; :func:`resolve` and
:func:`host_devices` stat the host (the I/O of this module).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, replace
from typing import Any

from lamina.errors import InvalidArgument, NotFound

PERMISSIONS = "rwm"
# Directories of /dev that hold no device of the host's own (moby/runc HostDevices).
_SKIP_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def valid_permissions(text: str) -> bool:
    return bool(text) and len(set(text)) == len(text) and set(text) <= set(PERMISSIONS)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """One ``--device``: the host path, where it appears, and the cgroup access."""

    host: str
    container: str
    permissions: str = PERMISSIONS

    def __post_init__(self) -> None:
        for what, path in (("host", self.host), ("container", self.container)):
            if not path.startswith("/") or "\0" in path:
                raise InvalidArgument(
                    f"device {what} path {path!r} must be absolute",
                    hint="use --device /dev/HOST[:/dev/CTR[:rwm]]",
                )
        if ".." in self.container.split("/"):
            raise InvalidArgument(f"device container path {self.container!r} contains '..'")
        if not valid_permissions(self.permissions):
            raise InvalidArgument(
                f"invalid device permissions {self.permissions!r}",
                hint="use a combination of r (read), w (write) and m (mknod)",
            )
        object.__setattr__(self, "host", posixpath.normpath(self.host))
        object.__setattr__(self, "container", posixpath.normpath(self.container))

    @classmethod
    def parse(cls, text: str) -> DeviceRequest:
        """``HOST``, ``HOST:CTR``, ``HOST:PERMS`` or ``HOST:CTR:PERMS`` (docker run's)."""
        parts = text.split(":")
        host, container, perms = parts[0], "", PERMISSIONS
        if len(parts) == 3:
            container, perms = parts[1], parts[2]
        elif len(parts) == 2:
            if valid_permissions(parts[1]):
                perms = parts[1]
            else:
                container = parts[1]
        elif len(parts) != 1:
            raise InvalidArgument(
                f"device {text!r} is not HOST[:CTR[:PERMS]]",
                hint="use --device /dev/HOST[:/dev/CTR[:rwm]]",
            )
        return cls(host, container or host, perms)


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node as the container gets it."""

    path: str  # in the container
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int
    permissions: str = PERMISSIONS

    def to_spec(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "major": self.major,
            "minor": self.minor,
            "fileMode": self.file_mode,
            "uid": self.uid,
            "gid": self.gid,
        }

    def cgroup_rule(self) -> dict[str, Any]:
        return {
            "allow": True,
            "type": self.type,
            "major": self.major,
            "minor": self.minor,
            "access": self.permissions,
        }


def _device(path: str, st: os.stat_result, permissions: str) -> Device | None:
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return Device(
        path=path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        permissions=permissions,
    )


def resolve(request: DeviceRequest) -> list[Device]:
    """The device (or, for a directory, the devices below it) ``request`` names.

    The host path's symlinks are followed (``/dev/disk/by-id/...``), as docker does;
    the container path is where the device node is made.
    """
    try:
        st = os.stat(request.host)
    except FileNotFoundError:
        raise NotFound(f"device {request.host!r} does not exist on this host") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot stat device {request.host!r}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        return [
            replace(d, path=request.container + d.path[len(request.host) :])
            for d in _walk(request.host, request.permissions)
        ]
    dev = _device(request.container, st, request.permissions)
    if dev is None:
        raise InvalidArgument(
            f"{request.host!r} is not a device", hint="give a character or block device"
        )
    return [dev]


def _walk(top: str, permissions: str) -> list[Device]:
    out: list[Device] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)  # in a walk, a symlink is an alias: skip it
            except OSError:
                continue
            dev = _device(path, st, permissions)
            if dev is not None:
                out.append(dev)
    return out


def host_devices(top: str = "/dev") -> list[Device]:
    """Every device node of the host's ``/dev`` (``--privileged``), but its console:
    the runtime makes the container's own."""
    return [d for d in _walk(top, PERMISSIONS) if d.path != "/dev/console"]
