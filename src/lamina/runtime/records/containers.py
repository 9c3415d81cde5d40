"""Container records on disk: ``<root>/containers/<id>/state.json``.

One directory per container (ARCHITECTURE.md §4; the names are
:mod:`lamina.stateroot`'s), mode 0700 because the container's root filesystem is
mounted inside it::

    containers/<id>/state.json      this record (temp file, fsync, rename, fsync dir)
    containers/<id>/rootfs/         where the container's snapshot is mounted
    containers/<id>/bundle/         the OCI bundle (config.json, process.json of exec)
    containers/<id>/hosts, resolv.conf, hostname   the init files (bind-mounted)
    containers/<id>/log             stdout and stderr of a detached container
    containers/<id>/exit.json       written once by the keeper when the process ends
    containers/<id>/runtime.log     the OCI runtime's own messages (JSON lines)
    containers/.lock                held while names are taken or records change

Records are written only under the lock, so two lamina processes cannot take one name
or lose each other's changes. A record's ``status`` is what lamina last saw; the live
status also depends on processes (see :mod:`lamina.runtime.lifecycle`). The *keeper*
is the process that waits for the container's process and writes ``exit.json``: the
monitor of a detached container, or the ``lamina run`` itself in the foreground.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from lamina.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    InvalidFormat,
    NotFound,
)
from lamina.runtime.records.fields import (
    ADJECTIVES,
    NOUNS,
    check_name,
    is_id,
    now,
    random_name,
    write_exit,
    write_file_atomic,
)
from lamina.runtime.records.fields import os_error as _os_error
from lamina.stateroot import (
    BUNDLE,
    CONTAINERS_LOCK,
    EXIT_FILE,
    LOG_FILE,
    ROOTFS,
    RUNTIME_LOG,
    STATE_FILE,
    containers_dir,
)

__all__ = [
    "ADJECTIVES",
    "MAX_STATE_BYTES",
    "NOUNS",
    "STATUSES",
    "Container",
    "ContainerStore",
    "check_name",
    "containers_by_image",
    "human_duration",
    "now",
    "parse_time",
    "random_name",
    "status_text",
    "write_exit",
    "write_file_atomic",
]

STATUSES = ("created", "running", "exited")
MAX_STATE_BYTES = 1 << 20
_LOCK_TIMEOUT = 30.0


def parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Docker's words for a duration: "Less than a second", "3 seconds", "2 hours"..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(c: Container, at: datetime | None = None) -> str:
    """The STATUS column of ``ps``: "Created", "Up 3 seconds", "Exited (0) 2 minutes ago"."""
    at = at or datetime.now(UTC)
    if c.status == "created":
        return "Created"
    if c.status == "running":
        started = parse_time(c.started)
        return "Up " + (human_duration((at - started).total_seconds()) if started else "")
    code = "?" if c.exit_code is None else str(c.exit_code)
    finished = parse_time(c.finished)
    ago = f" {human_duration((at - finished).total_seconds())} ago" if finished else ""
    return f"Exited ({code}){ago}"


@dataclass(frozen=True, slots=True)
class Container:
    """One container's record. ``pid_start``/``keeper_start`` are the processes' start
    times (``/proc/<pid>/stat`` field 22), so a reused pid is never taken for them."""

    id: str
    name: str
    image_ref: str
    image_id: str
    runtime: str
    created: str
    status: str = "created"
    command: tuple[str, ...] = ()
    rootfs: str = ""
    snapshot_key: str = ""
    detached: bool = False
    auto_remove: bool = False
    stop_signal: str = ""
    pid: int = 0
    pid_start: int = 0
    keeper_pid: int = 0
    keeper_start: int = 0
    started: str = ""
    finished: str = ""
    exit_code: int | None = None
    oom_killed: bool = False  # Docker's State.OOMKilled
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_id(self.id):
            raise InvalidFormat(f"container id {self.id!r} is not 64 hex digits")
        if self.status not in STATUSES:
            raise InvalidFormat(f"container {self.id[:12]} has unknown status {self.status!r}")
        object.__setattr__(self, "command", tuple(self.command))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["command"] = list(self.command)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> Container:
        if not isinstance(doc, dict):
            raise InvalidFormat("container state is not a JSON object")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:
            raise InvalidFormat(f"container state is incomplete: {exc}") from exc


class ContainerStore:
    """The records under ``<root>/containers``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.dir = containers_dir(self.root)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.dir, CONTAINERS_LOCK)

    # ------------------------------------------------------------------ paths

    def path(self, container_id: str, *parts: str) -> str:
        if not is_id(container_id):
            raise InvalidArgument(f"container id {container_id!r} is not 64 hex digits")
        return os.path.join(self.dir, container_id, *parts)

    def bundle_dir(self, container: Container) -> str:
        return self.path(container.id, BUNDLE)

    def log_path(self, container: Container) -> str:
        return self.path(container.id, LOG_FILE)

    def runtime_log(self, container: Container) -> str:
        return self.path(container.id, RUNTIME_LOG)

    def exit_path(self, container: Container) -> str:
        return self.path(container.id, EXIT_FILE)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """flock(2) on ``containers/.lock`` (dropped by the kernel if lamina dies)."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            deadline = time.monotonic() + _LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Conflict(
                            "timed out waiting for the container records lock",
                            hint="another lamina command is changing containers; try again",
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ records

    def _read(self, container_id: str) -> Container | None:
        try:
            with open(self.path(container_id, STATE_FILE), "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error("read the state of container", container_id, exc) from exc
        if len(data) > MAX_STATE_BYTES:
            raise InvalidFormat(f"the state of container {container_id[:12]} is too big")
        try:
            return Container.from_json(json.loads(data))
        except ValueError as exc:
            raise InvalidFormat(f"the state of container {container_id[:12]} is damaged") from exc

    def _write(self, container: Container) -> None:
        data = json.dumps(container.to_json(), indent=1, sort_keys=True).encode()
        write_file_atomic(self.path(container.id, STATE_FILE), data)

    def list(self) -> list[Container]:
        """Every readable record, oldest first (damaged ones are skipped)."""
        out: list[Container] = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for entry in names:
            if not is_id(entry):
                continue
            with suppress(InvalidFormat):
                record = self._read(entry)
                if record is not None:
                    out.append(record)
        out.sort(key=lambda c: (c.created, c.id))
        return out

    def get(self, ref: str) -> Container:
        """A container by full id, name, or unique id prefix (as ``docker`` resolves)."""
        if not ref:
            raise InvalidArgument("no container given")
        if is_id(ref):
            record = self._read(ref)
            if record is not None:
                return record
        records = self.list()
        for record in records:
            if record.name == ref:
                return record
        if re.fullmatch(r"[0-9a-f]+", ref):
            matches = [r for r in records if r.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(
                    f"container id prefix {ref!r} is ambiguous ({len(matches)} containers)",
                    hint="give more digits of the id, or the name",
                )
        raise NotFound(f"no such container: {ref}", hint="list containers with `lamina ps -a`")

    def create(
        self,
        *,
        image_ref: str,
        image_id: str,
        runtime: str,
        name: str | None = None,
        command: tuple[str, ...] = (),
        rootfs: str | None = None,
        detached: bool = False,
        auto_remove: bool = False,
        stop_signal: str = "",
        labels: dict[str, str] | None = None,
    ) -> Container:
        """Take a name, make the container's directory and write its first record.

        ``rootfs``: where its root filesystem is (default: ``<dir>/rootfs``, made empty
        here for the caller to mount the snapshot on).
        """
        if name is not None:
            check_name(name)
        with self.locked():
            taken = {c.name for c in self.list()}
            if name is None:
                name = random_name(taken)
            elif name in taken:
                raise AlreadyExists(
                    f"the container name {name!r} is already in use",
                    hint=f"remove that container (`lamina rm {name}`) or choose another name",
                )
            container_id = os.urandom(32).hex()
            directory = self.path(container_id)
            try:
                os.mkdir(directory, 0o700)
                os.mkdir(os.path.join(directory, BUNDLE), 0o700)
                if rootfs is None:
                    rootfs = os.path.join(directory, ROOTFS)
                    os.mkdir(rootfs, 0o755)
            except OSError as exc:
                raise _os_error("create the directory", directory, exc) from exc
            container = Container(
                id=container_id,
                name=name,
                image_ref=image_ref,
                image_id=image_id,
                runtime=runtime,
                created=now(),
                command=command,
                rootfs=os.path.abspath(rootfs),
                detached=detached,
                auto_remove=auto_remove,
                stop_signal=stop_signal,
                labels=dict(labels or {}),
            )
            self._write(container)
        return container

    def update(self, container_id: str, **changes: Any) -> Container:
        """Change fields of the stored record (re-read under the lock) and return it."""
        with self.locked():
            current = self._read(container_id)
            if current is None:
                raise NotFound(f"no such container: {container_id[:12]}")
            updated = replace(current, **changes)
            if updated != current:
                self._write(updated)
        return updated

    def remove_dir(self, container: Container) -> None:
        """Delete the container's directory (after it was unmounted and its runtime
        state deleted); idempotent. Refuses while something is mounted below it."""
        from lamina.layers.fsops import remove_at  # only rm needs them
        from lamina.snapshot.mountinfo import mounts_under

        directory = self.path(container.id)
        busy = mounts_under(directory)
        if busy:
            raise Conflict(
                f"container {container.short_id} still has {busy[0]} mounted",
                hint=f"unmount it first (`lamina umount {container.short_id}`)",
            )
        with self.locked():
            try:
                parent = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise _os_error("open", self.dir, exc) from exc
            try:
                # Drop state.json first: a half-removed directory is then no record.
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, STATE_FILE))
                remove_at(parent, container.id)
            except OSError as exc:
                raise _os_error("remove the directory", directory, exc) from exc
            finally:
                os.close(parent)


def containers_by_image(root: str) -> dict[str, list[Container]]:
    """Every container record under the lamina root ``root`` (running, stopped or just
    created), grouped by image ID (the config digest, as text). Reads only: no
    directory is made when there are no containers. For ``rmi`` and ``prune``, which
    must not take an image a container still uses."""
    out: dict[str, list[Container]] = {}
    if not os.path.isdir(containers_dir(os.path.abspath(root))):
        return out
    for container in ContainerStore(root).list():
        out.setdefault(container.image_id, []).append(container)
    return out
