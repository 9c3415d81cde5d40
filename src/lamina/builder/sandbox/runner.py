"""Run one RUN step's process in a mounted root filesystem, through runc.

The root is the merged view of an active overlay snapshot; everything the process
writes lands in the snapshot's upper dir, which becomes the step's layer. So nothing
lamina itself needs for the run may stay there:

- ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` are files of the
  :class:`Workspace`, bind-mounted (the init layer of ``lamina run``);
- mount points the image lacks (those files, ``/proc``, ``/dev``, ``/sys``, the targets
  of ``RUN --mount``) are made as empty *stubs* before the run and removed after it,
  with the parent directories' times put back, and parent directories that overlay
  copied up only to hold a stub are dropped from the upper dir (BuildKit's mount stub
  cleaner does the same; without it every RUN layer would carry ``/etc``).

A :class:`Workspace` is ``<root>/build/work/<id>/`` holding the bundle, the mount point
and an owner file (boot id, pid, start time). A build killed at any point leaves one
behind; :func:`remove_stale` (called by the next build) kills what runc still runs for
it, unmounts and deletes it, and the caller removes the active snapshot named in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina.errors import LaminaError, NotFound, ToolError
from lamina.stateroot import BUNDLE, INIT_FILE_NAMES, ROOTFS, RUNTIME_LOG, build_work_dir
from lamina.sysinfo import owner_alive, owner_label

if TYPE_CHECKING:
    from lamina.runtime.driver.runc import OCIRuntime

HOSTNAME = "lamina-build"
TAIL_LINES = 20
_STUB_DIRS = ("/proc", "/dev", "/sys")
_STUB_FILES = tuple(f"/etc/{name}" for name in INIT_FILE_NAMES)


# ---------------------------------------------------------------------- workspace


@dataclass(frozen=True, slots=True)
class Workspace:
    """``<root>/build/work/<id>``: ``bundle/``, ``rootfs/`` (the mount point), ``owner``
    (JSON: the owner label and the snapshot key this step uses)."""

    root: str
    id: str

    @property
    def dir(self) -> str:
        return os.path.join(build_work_dir(self.root), self.id)

    @property
    def rootfs(self) -> str:
        return os.path.join(self.dir, ROOTFS)

    @property
    def bundle(self) -> str:
        return os.path.join(self.dir, BUNDLE)

    @property
    def container_id(self) -> str:
        return f"lamina-build-{self.id}"

    @classmethod
    def create(cls, root: str, snapshot_key: str) -> Workspace:
        ws = cls(root, os.urandom(8).hex())
        try:
            os.makedirs(os.path.dirname(ws.dir), mode=0o700, exist_ok=True)
            os.mkdir(ws.dir, 0o700)
            os.mkdir(ws.bundle, 0o700)
            os.mkdir(ws.rootfs, 0o755)
            doc = {"owner": owner_label(), "snapshot": snapshot_key}
            with open(os.path.join(ws.dir, "owner"), "w", encoding="utf-8") as f:
                json.dump(doc, f)
        except OSError as exc:
            raise LaminaError(f"cannot make the build workspace {ws.dir}: {exc}") from exc
        return ws

    def read_owner(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.dir, "owner"), encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in doc.items() if isinstance(v, str)} if isinstance(doc, dict) else {}

    def remove(self, runtime: OCIRuntime | None) -> None:
        """Kill what runc runs for it, unmount everything below it, delete it."""
        from lamina.layers.fsops import remove_at
        from lamina.snapshot.mount import unmount_all

        if runtime is not None:
            with contextlib.suppress(LaminaError):
                runtime.delete(self.container_id, force=True)
        # a build killed -9 mid-RUN left its network attachment (netns, veth, lease)
        from lamina.network.attachments import detach

        with contextlib.suppress(LaminaError, OSError):
            detach(self.root, self.container_id)
        unmount_all(self.dir)
        parent = os.path.dirname(self.dir)
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                remove_at(fd, self.id)
        except OSError as exc:
            raise LaminaError(f"cannot remove the build workspace {self.dir}: {exc}") from exc
        finally:
            os.close(fd)


def stale_workspaces(root: str) -> Iterator[Workspace]:
    """Workspaces whose build process is gone."""
    base = build_work_dir(root)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return
    for name in names:
        ws = Workspace(root, name)
        owner = ws.read_owner().get("owner", "")
        if not owner_alive(owner):
            yield ws


# ---------------------------------------------------------------------- stubs


@dataclass(slots=True)
class Stubs:
    """Mount points made in ``rootfs`` for one run (see the module docs)."""

    rootfs: str
    upper: str
    created: list[str] = field(default_factory=list)  # relative paths, parents first
    # relative dir -> (in upper before?, mode, uid, gid, atime_ns, mtime_ns)
    walked: dict[str, tuple[bool, int, int, int, int, int]] = field(default_factory=dict)

    def ensure(self, path: str, *, directory: bool) -> None:
        parts = [p for p in path.split("/") if p and p != "."]
        if not parts or ".." in parts:
            return
        fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            rel = ""
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                st = _lstat_at(fd, name)
                child = f"{rel}/{name}" if rel else name
                if st is None:
                    self._note_parent(fd, rel)
                    if directory or not last:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    else:
                        os.close(
                            os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd)
                        )
                    self.created.append(child)
                elif last or not stat.S_ISDIR(st.st_mode):
                    return  # there already (or a symlink/file in the way: runc resolves it)
                if last:
                    return
                nfd = os.open(
                    name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
                os.close(fd)
                fd = nfd
                rel = child
        except OSError as exc:
            raise LaminaError(
                f"cannot make the mount point {path} in the build root: {exc}"
            ) from exc
        finally:
            os.close(fd)

    def _note_parent(self, fd: int, rel: str) -> None:
        if rel in self.walked or any(rel == c or rel.startswith(c + "/") for c in self.created):
            return
        st = os.stat(fd) if rel == "" else os.stat(".", dir_fd=fd)
        in_upper = os.path.lexists(os.path.join(self.upper, rel)) if rel else True
        self.walked[rel] = (
            in_upper,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_atime_ns,
            st.st_mtime_ns,
        )
        # every ancestor: overlay copies them up too
        head = rel
        while head:
            head = head.rpartition("/")[0]
            if head and head not in self.walked:
                a = os.stat(os.path.join(self.rootfs, head), follow_symlinks=False)
                up = os.path.lexists(os.path.join(self.upper, head))
                self.walked[head] = (
                    up,
                    a.st_mode,
                    a.st_uid,
                    a.st_gid,
                    a.st_atime_ns,
                    a.st_mtime_ns,
                )

    def remove_from_view(self) -> None:
        """After the run, with the root still mounted: delete the stubs (those the
        process left empty) and put the parents' times back."""
        for rel in reversed(self.created):
            path = os.path.join(self.rootfs, rel)
            st = _lstat_path(path)
            if st is None:
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(path)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(path)
        for rel, (_, _, _, _, atime, mtime) in self.walked.items():
            with contextlib.suppress(OSError):
                os.utime(os.path.join(self.rootfs, rel), ns=(atime, mtime), follow_symlinks=False)

    def prune_upper(self) -> None:
        """After unmounting: drop directories overlay copied up only for a stub."""
        from lamina.layers.api import OVERLAY_OPAQUE_XATTR

        for rel in sorted(self.walked, key=lambda r: r.count("/"), reverse=True):
            in_upper, mode, uid, gid, _, _ = self.walked[rel]
            if in_upper or not rel:
                continue
            path = os.path.join(self.upper, rel)
            st = _lstat_path(path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            if (st.st_mode, st.st_uid, st.st_gid) != (mode, uid, gid):
                continue
            with contextlib.suppress(OSError):
                if os.listdir(path):
                    continue
                opaque = b""
                with contextlib.suppress(OSError):
                    opaque = os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False)
                if opaque != b"y":
                    os.rmdir(path)


def _lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _lstat_path(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class SpecMount:
    """An extra mount of the run, in runtime-spec form."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


@dataclass(frozen=True, slots=True)
class Process:
    argv: tuple[str, ...]
    env: tuple[str, ...]
    user: str = ""
    workdir: str = "/"
    network: str = "bridge"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    exit_code: int
    tail: tuple[str, ...]
    error: str | None = None  # the runtime's own message, when the process never ran


def run_process(
    ws: Workspace,
    runtime: OCIRuntime,
    stubs: Stubs,
    process: Process,
    *,
    mounts: Sequence[SpecMount] = (),
    on_output: Callable[[bytes], None] | None = None,
) -> RunOutcome:
    """Run ``process`` in the mounted ``ws.rootfs`` and wait. ``stubs`` (made for
    ``ws.rootfs`` and its upper dir) are removed from the view again when this returns;
    call ``stubs.prune_upper()`` once the root is unmounted."""
    from lamina.network.config import DEFAULT_NETWORK
    from lamina.oci.config import ContainerConfig
    from lamina.runtime.bundle.spec import RunOptions
    from lamina.runtime.bundle.writer import write_bundle

    try:
        for path in _STUB_DIRS:
            stubs.ensure(path, directory=True)
        for path in _STUB_FILES:
            stubs.ensure(path, directory=False)
        for m in mounts:
            is_file = m.type == "bind" and os.path.isfile(m.source)
            stubs.ensure(m.destination, directory=not is_file)
        attachment = None
        if process.network == "bridge":
            # the default network with NAT, as `lamina run` (apt-get works); released
            # below, or by the next run's sweep if this build is killed
            from lamina.network.attachments import attach

            attachment = attach(ws.root, ws.container_id, f"build-{ws.id}", DEFAULT_NETWORK)
        # the bundle `lamina run` writes, with the step's USER and WORKDIR as they are
        # (BuildKit's rules, not `docker run -u/-w`'s) and the --mount mounts added
        write_bundle(
            ws.bundle,
            rootfs=ws.rootfs,
            init_dir=ws.dir,
            config=ContainerConfig(env=process.env, cmd=process.argv),
            options=RunOptions(network=process.network),
            user=process.user,
            workdir=process.workdir or "/",
            hostname=HOSTNAME,
            extra_mounts=[m.to_json() for m in mounts],
            attachment=attachment,
        )
        return _run(ws, runtime, on_output)
    finally:
        if process.network == "bridge":
            from lamina.network.attachments import detach

            detach(ws.root, ws.container_id)
        stubs.remove_from_view()


def _run(
    ws: Workspace, runtime: OCIRuntime, on_output: Callable[[bytes], None] | None
) -> RunOutcome:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    read_fd, write_fd = os.pipe()
    partial = bytearray()

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(65536)
                if not data:
                    break
                if on_output is not None:
                    on_output(data)
                partial.extend(data)
                *lines, rest = partial.split(b"\n")
                for line in lines:
                    tail.append(line.decode("utf-8", "replace"))
                partial[:] = rest
        if partial:
            tail.append(partial.decode("utf-8", "replace"))

    reader = threading.Thread(target=pump, name="build-output", daemon=True)
    reader.start()
    try:
        result = runtime.run(
            ws.container_id,
            ws.bundle,
            log=os.path.join(ws.dir, RUNTIME_LOG),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            own_process_group=True,
            cancel_on_interrupt=True,  # Ctrl-C cancels the step at once
        )
    except NotFound as exc:
        raise ToolError(f"cannot run the build step: {exc.message}", hint=exc.hint) from exc
    finally:
        os.close(write_fd)
        reader.join()
    return RunOutcome(result.exit_code, tuple(tail), result.runtime_error)
