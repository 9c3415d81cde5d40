"""The one module of lamina that calls mount(2) and umount2(2) (ARCHITECTURE.md §2).

:func:`mount_all` performs :class:`~lamina.snapshot.api.Mount` values on a target,
:func:`unmount` / :func:`unmount_all` undo them, :func:`mountinfo` reads
``/proc/self/mountinfo``. Everything goes through ctypes (libc ``mount``, ``umount2`` and
the raw ``fsopen``/``fsconfig``/``fsmount``/``move_mount``/``mount_setattr`` syscalls),
no helper binary, except the last-resort overlay path below.

Overlay and its option-string limit: mount(2) copies at most one page (4096 bytes) of
options, which caps a stack of absolute lower dirs at a few dozen layers. lamina mounts
overlay with the new mount API instead: ``fsconfig(FSCONFIG_SET_STRING, "lowerdir+",
path)`` adds one lower dir per call (Linux 6.8+), so the only limit left is overlay's own
stack depth (500 lowers). The kernel also explains a refused overlay in words through the
fs context (``overlay: upperdir is in-use by another mount``), which lamina puts in the
error. On kernels without ``lowerdir+`` it falls back to mount(2) with the option string;
when that string is too long, the common directory of all the layer paths is stripped and
``mount(8)`` runs with that directory as its working directory (relative lower dirs,
containerd's trick; a child process, because the working directory is per process and
lamina may run threads). One fsconfig value is at most 255 bytes; a longer path is passed
as ``/proc/self/fd/N`` of an O_PATH descriptor.

Overlay options lamina's snapshotter uses, and why: ``index=off`` (the inode index binds
a lower layer to one upper dir, but lamina shares each layer among many containers and
remounts them in new combinations), ``redirect_dir=off`` and ``metacopy=off`` (renamed
directories and metadata-only copy-ups would leave overlay xattrs in the upper dir that
the differ cannot turn into an OCI layer; with them off a directory rename is EXDEV and
tools fall back to copying, as under Docker).

Propagation: mounts are made in the caller's mount namespace with default propagation;
the runtime makes its own namespace private before it mounts a container root.
"""

from __future__ import annotations

import ctypes
import errno
import os

from lamina.errors import (
    Conflict,
    InvalidArgument,
    LaminaError,
    LimitExceeded,
    NotFound,
    ToolError,
    Unsupported,
)
from lamina.lightstd import suppress

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    from lamina.snapshot.api import Mount

    MountAPI = Literal["auto", "new", "legacy"]

# Imports stay light (no dataclasses, no typing at run time): `lamina run`'s fast path
# (lamina.runtime.plans.replay) mounts through this module and counts every millisecond.
# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# new mount API (same syscall numbers on every architecture since Linux 5.1)
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_MOUNT_SETATTR = 442
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 1
_MOUNT_ATTR_NOSUID = 2
_MOUNT_ATTR_NODEV = 4
_MOUNT_ATTR_NOEXEC = 8
_FSCONFIG_VALUE_MAX = 255  # fsconfig copies at most 256 bytes of a string value
MAX_OVERLAY_LOWERS = 500  # overlayfs OVL_MAX_STACK

_FLAGS = {
    "ro": MS_RDONLY,
    "rw": 0,
    "nosuid": MS_NOSUID,
    "suid": 0,
    "nodev": MS_NODEV,
    "dev": 0,
    "noexec": MS_NOEXEC,
    "exec": 0,
    "sync": MS_SYNCHRONOUS,
    "dirsync": MS_DIRSYNC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
    "defaults": 0,
}
_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
_ATTRS = {
    MS_RDONLY: _MOUNT_ATTR_RDONLY,
    MS_NOSUID: _MOUNT_ATTR_NOSUID,
    MS_NODEV: _MOUNT_ATTR_NODEV,
    MS_NOEXEC: _MOUNT_ATTR_NOEXEC,
}
_PATH_OPTIONS = ("upperdir", "workdir")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _fs(path: str) -> bytes:
    return os.fsencode(path)


def _error(err: int, what: str, detail: str = "") -> LaminaError:
    reason = detail or os.strerror(err)
    msg = f"{what}: {reason}"
    if err in (errno.EPERM, errno.EACCES):
        return Unsupported(msg, hint="mounting needs root (CAP_SYS_ADMIN in the mount namespace)")
    if err == errno.ENODEV:
        return Unsupported(
            msg, hint="load the module (modprobe overlay) or use the native snapshotter"
        )
    if err == errno.ENOENT:
        return NotFound(msg, hint="the mount source or target does not exist")
    if err == errno.EBUSY:
        return Conflict(msg, hint="something is mounted there or uses it; unmount it first")
    if err in (errno.EINVAL, errno.ENOTDIR, errno.ELOOP):
        return InvalidArgument(msg, hint="for overlay, the kernel log (dmesg) says more")
    if err == errno.E2BIG:
        return LimitExceeded(msg, hint="too many layers for one overlay mount")
    if err in (errno.ENOSPC, errno.ENOMEM):
        return LaminaError(msg, hint="the kernel is out of space or memory for mounts")
    return LaminaError(msg)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise _error(err, what)
    return ret


# --------------------------------------------------------------------------- options


class _Parsed:
    """Mount options split into flags, propagation and filesystem data (a plain class,
    not a dataclass: see the import note above)."""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, flags: int, propagation: int, data: tuple[str, ...]) -> None:
        self.flags = flags  # MS_* flags of the mount itself
        self.propagation = propagation  # MS_PRIVATE etc., applied after the mount
        self.data = data  # filesystem options (key=value or words)


def _parse(mount: Mount) -> _Parsed:
    flags = propagation = 0
    data: list[str] = []
    for opt in mount.options:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        elif mount.type == "bind":
            raise InvalidArgument(f"bind mount option {opt!r} is not supported")
        else:
            data.append(opt)
    if mount.type == "bind":
        flags |= MS_BIND
    return _Parsed(flags, propagation, tuple(data))


def _split_lowerdir(value: str) -> list[str]:
    """overlay's ``lowerdir`` list: ``:``-separated, ``\\:`` and ``\\\\`` escaped."""
    out: list[str] = []
    cur: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            cur.append(next(it, ""))
        elif ch == ":":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in out if p]


# --------------------------------------------------------------------------- mount


def mount_all(mounts: Sequence[Mount], target: str, *, mount_api: MountAPI = "auto") -> None:
    """Mount ``mounts`` on ``target`` in order (later ones stack on earlier ones).

    On failure the mounts already made are undone and the error is raised. ``mount_api``
    forces the new mount API or plain mount(2) for overlay (tests); "auto" picks.
    """
    if not os.path.isabs(target):
        target = os.path.abspath(target)
    done = 0
    try:
        for mount in mounts:
            _mount_one(mount, target, mount_api)
            done += 1
    except BaseException:
        for _ in range(done):
            with suppress(LaminaError):
                unmount(target)
        raise


def _mount_one(mount: Mount, target: str, api: MountAPI) -> None:
    parsed = _parse(mount)
    if mount.type == "overlay":
        lowers = _split_lowerdir(mount.option("lowerdir") or "")
        data = tuple(o for o in parsed.data if not o.startswith("lowerdir="))
        flag_words = tuple(o for o in mount.options if o in _FLAGS)
        _mount_overlay(
            target,
            lowers,
            source=mount.source,
            data=data,
            flags=parsed.flags,
            flag_words=flag_words,
            api=api,
        )
    elif parsed.flags & MS_BIND:
        _mount_bind(mount, parsed, target)
    else:
        _mount_legacy(mount.type, mount.source, target, parsed.flags, ",".join(parsed.data))
    if parsed.propagation:
        _check(
            _libc.mount(None, _fs(target), None, parsed.propagation, None),
            f"set propagation of {target}",
        )


def _mount_legacy(fstype: str, source: str, target: str, flags: int, data: str) -> None:
    what = f"mount {fstype} on {target}"
    if len(data.encode()) >= os.sysconf("SC_PAGESIZE"):
        raise LimitExceeded(f"{what}: option string of {len(data)} bytes is over one page")
    ret = _libc.mount(_fs(source), _fs(target), fstype.encode(), flags, data.encode() or None)
    _check(ret, what)


def _mount_bind(mount: Mount, parsed: _Parsed, target: str) -> None:
    what = f"bind mount {mount.source} on {target}"
    recursive = parsed.flags & MS_REC
    _check(
        _libc.mount(_fs(mount.source), _fs(target), None, MS_BIND | recursive, None),
        what,
    )
    attrs = parsed.flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if not attrs:
        return
    try:
        # A bind mount ignores ro/nosuid/... on creation; they take a remount. With rbind,
        # mount_setattr(AT_RECURSIVE) makes every submount read-only too (Linux 5.12+).
        if recursive and _setattr_recursive(target, attrs):
            return
        _check(
            _libc.mount(None, _fs(target), None, MS_REMOUNT | MS_BIND | attrs, None),
            f"remount {target} with {','.join(o for o in mount.options if o in _FLAGS)}",
        )
    except BaseException:
        with suppress(LaminaError):
            unmount(target, lazy_fallback=True)
        raise


def _setattr_recursive(target: str, ms_flags: int) -> bool:
    attr = _MountAttr(attr_set=sum(v for k, v in _ATTRS.items() if ms_flags & k))
    ret = _syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(_fs(target)),
        ctypes.c_uint(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return False
        raise _error(err, f"make {target} read-only")
    return True


# --------------------------------------------------------------------------- overlay


def mount_overlay(
    target: str,
    lowers: Sequence[str],
    options: Sequence[str],
    *,
    flags: int = 0,
    api: MountAPI = "auto",
) -> None:
    """Mount overlay on ``target``: ``lowers`` nearest first, ``options`` the other
    filesystem options (``upperdir=...``, ``workdir=...``, ``index=off``...), ``flags``
    MS_* bits. What :func:`mount_all` does for an overlay :class:`Mount`, without
    building one (for ``lamina run``'s fast path)."""
    words = tuple(k for k, v in _FLAGS.items() if v and flags & v == v and k not in ("bind",))
    _mount_overlay(
        target,
        list(lowers),
        source="overlay",
        data=tuple(options),
        flags=flags,
        flag_words=words,
        api=api,
    )


def _option(data: Sequence[str], key: str) -> str | None:
    for opt in data:
        k, eq, value = opt.partition("=")
        if k == key and eq:
            return value
    return None


def _mount_overlay(
    target: str,
    lowers: list[str],
    *,
    source: str,
    data: tuple[str, ...],
    flags: int,
    flag_words: tuple[str, ...],
    api: MountAPI,
) -> None:
    if not lowers:
        raise InvalidArgument(f"overlay mount on {target} has no lowerdir")
    if len(lowers) > MAX_OVERLAY_LOWERS:
        raise LimitExceeded(
            f"overlay mount on {target} has {len(lowers)} lower dirs, over the kernel's "
            f"{MAX_OVERLAY_LOWERS}",
            hint="squash the image into fewer layers",
        )
    try:
        if api in ("auto", "new"):
            try:
                _overlay_new_api(source, data, flags, lowers, target)
                return
            except _NoNewAPI:
                if api == "new":
                    raise Unsupported(
                        "this kernel has no overlay lowerdir+ (Linux 6.8+)",
                        hint="use mount_api='legacy'",
                    ) from None
        _overlay_legacy(
            target, lowers, source=source, data_opts=data, flags=flags, flag_words=flag_words
        )
    except NotFound:
        # overlay logs which path it could not resolve only to dmesg: name it here
        paths = [target, *lowers, *(v for k in _PATH_OPTIONS if (v := _option(data, k)))]
        missing = next((p for p in paths if not os.path.isdir(p)), None)
        if missing is None:
            raise
        raise NotFound(
            f"mount overlay on {target}: {missing} is not a directory",
            hint="the snapshot's directories are gone; remove it and prepare it again",
        ) from None


class _NoNewAPI(Exception):
    """fsopen or overlay's lowerdir+ is missing: fall back to mount(2)."""


def _fs_messages(fd: int) -> str:
    """The fs context's log (``e overlay: ...`` lines), which says why a mount failed."""
    lines = []
    for _ in range(16):
        try:
            msg = os.read(fd, 1024)
        except OSError:
            break
        if not msg:
            break
        text = msg.decode(errors="replace").strip()
        lines.append(text[2:] if text[:2] in ("e ", "w ", "i ") else text)
    return "; ".join(lines)


def _overlay_new_api(
    source: str, data: tuple[str, ...], flags: int, lowers: list[str], target: str
) -> None:
    what = f"mount overlay on {target}"
    fsfd = _syscall(
        ctypes.c_long(_SYS_FSOPEN), ctypes.c_char_p(b"overlay"), ctypes.c_uint(_FSOPEN_CLOEXEC)
    )
    if fsfd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise _NoNewAPI()
        raise _error(err, what)
    fds = [fsfd]  # closed at the end (no contextlib.ExitStack: start-up time)
    try:

        def config(cmd: int, key: str | None, value: str | None) -> None:
            if value is not None and len(os.fsencode(value)) > _FSCONFIG_VALUE_MAX:
                value = _short_path(value, fds)
            ret = _syscall(
                ctypes.c_long(_SYS_FSCONFIG),
                ctypes.c_int(fsfd),
                ctypes.c_uint(cmd),
                ctypes.c_char_p(key.encode() if key is not None else None),
                ctypes.c_char_p(os.fsencode(value) if value is not None else None),
                ctypes.c_int(0),
            )
            if ret < 0:
                err = ctypes.get_errno()
                detail = _fs_messages(fsfd)
                if key == "lowerdir+" and err == errno.EINVAL and "unknown" in detail.lower():
                    raise _NoNewAPI()
                if key == "lowerdir+" and err == errno.EINVAL and not detail:
                    raise _NoNewAPI()
                raise _error(err, what, detail)

        config(_FSCONFIG_SET_STRING, "source", source)
        for lower in lowers:
            config(_FSCONFIG_SET_STRING, "lowerdir+", lower)
        for opt in data:
            key, eq, value = opt.partition("=")
            if eq:
                config(_FSCONFIG_SET_STRING, key, value)
            else:
                config(_FSCONFIG_SET_FLAG, key, None)
        if flags & MS_RDONLY:
            config(_FSCONFIG_SET_FLAG, "ro", None)
        config(_FSCONFIG_CMD_CREATE, None, None)
        attrs = sum(v for k, v in _ATTRS.items() if flags & k)
        mfd = _syscall(
            ctypes.c_long(_SYS_FSMOUNT),
            ctypes.c_int(fsfd),
            ctypes.c_uint(_FSMOUNT_CLOEXEC),
            ctypes.c_uint(attrs),
        )
        if mfd < 0:
            err = ctypes.get_errno()
            raise _error(err, what, _fs_messages(fsfd))
        fds.append(mfd)
        ret = _syscall(
            ctypes.c_long(_SYS_MOVE_MOUNT),
            ctypes.c_int(mfd),
            ctypes.c_char_p(b""),
            ctypes.c_int(_AT_FDCWD),
            ctypes.c_char_p(_fs(target)),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
        )
        _check(ret, what)
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _short_path(path: str, fds: list[int]) -> str:
    """A path of at most 255 bytes naming ``path``'s directory: /proc/self/fd/N."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds.append(fd)
    return f"/proc/self/fd/{fd}"


def _overlay_legacy(
    target: str,
    lowers: list[str],
    *,
    source: str,
    data_opts: tuple[str, ...],
    flags: int,
    flag_words: tuple[str, ...],
) -> None:
    data = ",".join((f"lowerdir={':'.join(lowers)}", *data_opts))
    page = os.sysconf("SC_PAGESIZE")
    if len(data.encode()) < page:
        _mount_legacy("overlay", source, target, flags, data)
        return
    # Too long for one page: make every layer path relative to their common directory
    # and mount from there. Only mount(8) in a child can chdir without moving our threads.
    paths = lowers + [v for k in _PATH_OPTIONS if (v := _option(data_opts, k)) is not None]
    if not all(os.path.isabs(p) for p in paths):
        raise LimitExceeded(f"overlay options for {target} are {len(data)} bytes, over one page")
    base = os.path.commonpath(paths)
    if base in lowers or base == "/":
        raise LimitExceeded(
            f"overlay options for {target} are {len(data)} bytes and cannot be shortened",
            hint="keep the layers of one image under one snapshot root",
        )

    def rel(path: str) -> str:
        return os.path.relpath(path, base)

    opts = [f"lowerdir={':'.join(rel(p) for p in lowers)}"]
    for opt in data_opts:
        key, eq, value = opt.partition("=")
        opts.append(f"{key}={rel(value)}" if key in _PATH_OPTIONS and eq else opt)
    words = [o for o in flag_words if o not in ("bind", "rbind")]
    short = ",".join(opts + words)
    if len(short.encode()) >= page:
        raise LimitExceeded(
            f"overlay options for {target} are {len(short)} bytes even with relative paths",
            hint="squash the image into fewer layers",
        )
    import subprocess  # here: a command that never takes this path does not pay for it

    try:
        proc = subprocess.run(
            ["mount", "-t", "overlay", "-o", short, source, target],
            cwd=base,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NotFound("mount(8) is not installed", hint="install util-linux") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"mount(8) of overlay on {target} timed out") from exc
    if proc.returncode != 0:
        raise ToolError(
            f"mount(8) of overlay on {target} failed: {proc.stderr.strip()}",
            hint="the kernel log (dmesg) says more",
        )


# --------------------------------------------------------------------------- unmount


def unmount(target: str, *, lazy_fallback: bool = True) -> None:
    """Unmount the top mount on ``target``; NotFound if nothing is mounted there.

    When the mount is busy and ``lazy_fallback`` is true, detach it lazily (MNT_DETACH):
    it disappears from the tree now and is freed when its last user goes.
    """
    path = _fs(os.path.abspath(target))
    if _libc.umount2(path, UMOUNT_NOFOLLOW) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY and lazy_fallback:
        if _libc.umount2(path, UMOUNT_NOFOLLOW | MNT_DETACH) == 0:
            return
        err = ctypes.get_errno()
    if err == errno.EINVAL:
        raise NotFound(f"nothing is mounted on {target}")
    raise _error(err, f"unmount {target}")


def unmount_all(target: str, *, lazy_fallback: bool = True) -> int:
    """Unmount every mount stacked on ``target`` (and below it); returns how many.

    A missing or unmounted target is fine (0): this is what cleanup after a crash calls.
    """
    from lamina.snapshot.mountinfo import mounts_under

    for count in range(1000):
        below = mounts_under(target)
        if not below:
            return count
        # deepest first, so a submount never keeps its parent busy
        with suppress(NotFound):
            unmount(below[0], lazy_fallback=lazy_fallback)
    raise Conflict(f"could not unmount everything under {target}")


def is_mounted(path: str) -> bool:
    """True when something is mounted exactly on ``path``."""
    from lamina.snapshot.mountinfo import mountinfo

    real = os.path.realpath(path)
    return any(m.mount_point == real for m in mountinfo())
