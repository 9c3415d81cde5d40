"""fanotify pre-content (FAN_PRE_ACCESS, kernel >= 6.14) through ctypes.

The kernel stops a reader before it touches a file range, tells us the range, and waits
for our answer; we write the missing bytes (through the event's own fd, which carries
FMODE_NONOTIFY, so our write does not raise a second event) and answer FAN_ALLOW.
Nothing in the standard library wraps fanotify, hence ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_CLASS_PRE_CONTENT = 0x08
FAN_MARK_ADD = 0x01
FAN_MARK_REMOVE = 0x02
FAN_MARK_INODE = 0x00
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_PRE_ACCESS = 0x00100000
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_EVENT_INFO_TYPE_RANGE = 6
AT_FDCWD = -100

_META = struct.Struct("=IBBHQii")  # event_len vers reserved metadata_len mask fd pid
_INFO_HDR = struct.Struct("=BBH")
_RANGE = struct.Struct("=BBHIQQ")  # hdr, pad, offset, count
_RESPONSE = struct.Struct("=iI")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int


def deny_errno(err: int) -> int:
    """FAN_DENY with an errno the reader sees (EIO, EAGAIN, ... ; kernel >= 6.14)."""
    return FAN_DENY | ((err & 0xFF) << 24)


def init() -> int:
    """A pre-content group whose event fds are opened read-write (so we can fill)."""
    fd = _libc.fanotify_init(FAN_CLOEXEC | FAN_CLASS_PRE_CONTENT, os.O_RDWR | os.O_LARGEFILE)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fanotify_init: {os.strerror(e)}")
    return int(fd)


def mark(group: int, path: str, *, flags: int = FAN_MARK_INODE, mask: int = FAN_PRE_ACCESS) -> None:
    rc = _libc.fanotify_mark(group, FAN_MARK_ADD | flags, mask, AT_FDCWD, os.fsencode(path))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fanotify_mark {path}: {os.strerror(e)}")


@dataclass(frozen=True, slots=True)
class Event:
    mask: int
    fd: int
    pid: int
    offset: int  # -1 when the event carries no range (open-time pre-content check)
    count: int


def parse(buf: bytes) -> list[Event]:
    events: list[Event] = []
    pos = 0
    while pos + _META.size <= len(buf):
        ev_len, _vers, _res, meta_len, mask, fd, pid = _META.unpack_from(buf, pos)
        off, cnt = -1, 0
        info = pos + meta_len
        while info + _INFO_HDR.size <= pos + ev_len:
            itype, _pad, ilen = _INFO_HDR.unpack_from(buf, info)
            if ilen == 0:
                break
            if itype == FAN_EVENT_INFO_TYPE_RANGE:
                _t, _p, _l, _pad2, off, cnt = _RANGE.unpack_from(buf, info)
            info += ilen
        events.append(Event(mask, fd, pid, off, cnt))
        pos += ev_len
    return events


def respond(group: int, fd: int, response: int) -> None:
    try:
        os.write(group, _RESPONSE.pack(fd, response))
    except OSError as exc:
        # ENOENT: the reader went away (killed) before we answered; nothing waits.
        if exc.errno != errno.ENOENT:
            raise
