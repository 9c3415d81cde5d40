"""USER and WORKDIR, resolved inside the container's root and never trusted.

The user: ``-u``/``USER`` is ``user[:group]`` where each part is a name or a number.
Names are looked up in the *image's* ``/etc/passwd`` and ``/etc/group``, read with
:func:`lamina.layers.fsops.safe_read_file`: the path is resolved inside the root (a
symlinked ``/etc/passwd`` is followed chroot-style, never to the host's), only regular
files are read and at most :data:`MAX_DB_BYTES` (CVE-2024-9676, CVE-2026-47262: a
FIFO or ``/dev/zero`` planted as ``/etc/passwd`` must not hang or exhaust the runner).
The rules are libcontainer's ``GetExecUser``: a numeric user needs no passwd entry
(gid 0, home ``/``); a user found in passwd gets its primary group, its home and, when
no group was given, every group that lists it as a member.

The working directory: :func:`prepare_workdir` makes it inside the root through the
fd-walk of :mod:`lamina.layers.fsops` (symlinks resolve as if chrooted, so a WORKDIR
linking to ``/`` or ``../../..`` stays inside) and returns the resolved path without
symlinks, which becomes ``process.cwd``. A WORKDIR in ``/proc``, ``/sys`` or ``/dev``
is refused: the runtime mounts kernel filesystems there, where a path like
``/proc/self/fd/7`` would name a host directory the runtime leaked (CVE-2024-21626).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from lamina.errors import InvalidArgument, InvalidFormat, NotFound, Unsafe
from lamina.layers import fsops

MAX_DB_BYTES = 1 << 20  # /etc/passwd, /etc/group: 1 MiB is thousands of entries
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel
KERNEL_FS_DIRS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """The numeric identity a container process runs as."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"
    name: str = ""

    def __post_init__(self) -> None:
        for value in (self.uid, self.gid, *self.additional_gids):
            if not 0 <= value <= MAX_ID:
                raise InvalidArgument(f"user or group id {value} is out of range")


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    """One line of /etc/passwd (the fields lamina uses)."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One line of /etc/group."""

    name: str
    gid: int
    members: tuple[str, ...]


def _parse_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    if value > MAX_ID:
        raise InvalidArgument(f"user or group id {text} is out of range (0..{MAX_ID})")
    return value


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd(5) file; malformed lines and NIS (+/-) lines are skipped."""
    out: list[PasswdEntry] = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or fields[0][0] in "#+-":
            continue
        uid, gid = _safe_id(fields[2]), _safe_id(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 and fields[5].startswith("/") else "/"
        out.append(PasswdEntry(fields[0], uid, gid, home))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group(5) file; malformed lines are skipped."""
    out: list[GroupEntry] = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or fields[0][0] in "#+-":
            continue
        gid = _safe_id(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        out.append(GroupEntry(fields[0], gid, members))
    return out


def _safe_id(text: str) -> int | None:
    try:
        return _parse_id(text.strip())
    except InvalidArgument:
        return None


def _read_db(root: fsops.Root, path: str) -> str | None:
    """The text of ``path`` in the image, or None when it does not exist."""
    try:
        data = fsops.safe_read_file(root, path, MAX_DB_BYTES)
    except NotFound:
        return None
    except InvalidFormat:  # /etc is a file: there is no such database
        return None
    return data.decode("utf-8", "replace")


def resolve_user_in(
    spec: str,
    passwd_text: str | None,
    group_text: str | None,
    *,
    primary_in_groups: bool = False,
) -> ResolvedUser:
    """:func:`resolve_user` on the texts of the two files (None: the file is absent)."""
    if "\0" in spec or spec.count(":") > 1:
        raise InvalidArgument(f"invalid user {spec!r}", hint="use -u user[:group], names or ids")
    user_part, has_group, group_part = spec.partition(":")
    if has_group and not group_part:
        raise InvalidArgument(f"invalid user {spec!r}: empty group", hint="use -u user:group")
    user_part = user_part or "0"
    uid_arg = _parse_id(user_part)
    users = parse_passwd(passwd_text or "")
    if uid_arg is not None:
        entry = next((u for u in users if u.uid == uid_arg), None)
    else:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            where = (
                "in the image's /etc/passwd"
                if passwd_text is not None
                else ("(the image has no /etc/passwd)")
            )
            raise NotFound(
                f"unable to find user {user_part!r} {where}",
                hint="use a numeric uid (-u 1000:1000) or add the user to the image",
            )
    uid = entry.uid if entry is not None else uid_arg
    assert uid is not None
    gid = entry.gid if entry is not None else 0
    home = entry.home if entry is not None else "/"
    name = entry.name if entry is not None else ""

    groups = parse_group(group_text or "")
    extra: list[int] = []
    if has_group:
        gid_arg = _parse_id(group_part)
        if gid_arg is not None:
            gid = gid_arg
        else:
            match = next((g for g in groups if g.name == group_part), None)
            if match is None:
                where = (
                    "in the image's /etc/group"
                    if group_text is not None
                    else ("(the image has no /etc/group)")
                )
                raise NotFound(
                    f"unable to find group {group_part!r} {where}",
                    hint="use a numeric gid (-u user:1000) or add the group to the image",
                )
            gid = match.gid
    elif entry is not None:
        # Supplementary groups only for a user known by passwd and no explicit group,
        # as libcontainer's GetExecUser does.
        for group in groups:
            if name in group.members and group.gid not in extra:
                extra.append(group.gid)
    if primary_in_groups:
        # Docker (the daemon's getUser), BuildKit and buildah hand the runtime the
        # primary group first among the supplementary ones, whatever the form of the
        # user: `id` then shows groups=GID,... and /proc/self/status lists it.
        extra = [gid, *(g for g in extra if g != gid)]
    return ResolvedUser(uid, gid, tuple(extra), home, name)


def resolve_user(rootfs: str, spec: str, *, primary_in_groups: bool = False) -> ResolvedUser:
    """Resolve ``-u``/``USER`` (``""`` means root) against the image root ``rootfs``.

    ``primary_in_groups``: list the primary gid first in ``additional_gids``, as Docker
    and BuildKit set a process's groups (without it: libcontainer's GetExecUser, the
    groups that name the user in /etc/group, only for a passwd user with no group).
    """
    if "\0" in spec:
        raise InvalidArgument(f"invalid user {spec!r}")
    with fsops.Root(rootfs) as root:
        passwd = _read_db(root, "etc/passwd")
        group = _read_db(root, "etc/group")
    return resolve_user_in(spec, passwd, group, primary_in_groups=primary_in_groups)


# ---------------------------------------------------------------------- WORKDIR


def _check_not_kernel_fs(path: str, requested: str) -> None:
    for top in KERNEL_FS_DIRS:
        if path == top or path.startswith(top + "/"):
            raise Unsafe(
                f"working directory {requested!r} lies in {top}, where the runtime "
                "mounts a kernel filesystem",
                hint="choose a WORKDIR outside /proc, /sys and /dev (CVE-2024-21626)",
            )


def prepare_workdir(rootfs: str, path: str) -> str:
    """Make the working directory ``path`` inside ``rootfs``; return it resolved.

    Missing directories are created (mode 0755, owned by the caller, root); symlinks
    on the way resolve inside the root. The result is the absolute path inside the
    root with no symlinks left, for ``process.cwd``.
    """
    if not path.startswith("/") or "\0" in path:
        raise InvalidArgument(f"working directory {path!r} must be an absolute path")
    clean = posixpath.normpath(path)
    if clean in ("/", "//"):
        return "/"
    _check_not_kernel_fs(clean, path)
    real_root = os.path.realpath(rootfs)
    with fsops.Root(rootfs) as root:
        fd = root.dir_fd(clean.lstrip("/"), create=True)
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            raise fsops.os_error("resolve", path, exc) from exc
    if where == real_root:
        return "/"
    if not where.startswith(real_root + "/"):  # cannot happen with the in-root walk
        raise Unsafe(f"working directory {path!r} resolves outside the container's root")
    resolved = where[len(real_root) :]
    _check_not_kernel_fs(resolved, path)
    return resolved
