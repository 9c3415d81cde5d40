"""Image configuration (image-spec config.md), with Docker's extensions.

An :class:`ImageConfig` is what ``application/vnd.oci.image.config.v1+json`` (and
Docker's ``container.image.v1+json``, the same document) holds: the platform, the
defaults for a container (:class:`ContainerConfig`), ``rootfs.diff_ids`` (one per
layer, digests of the *uncompressed* tars, base first) and the ``history``.

Configs are written by many tools with many extra fields (Docker's ``container_config``,
``docker_version``, ``Hostname``...). Reading and writing one must not lose them, so
fields lamina does not model are kept verbatim in ``extra`` (top level and inside
``config``) and written back.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from lamina.errors import InvalidArgument, InvalidFormat
from lamina.oci.canonical import canonical_json, load_json_object
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform

_EMPTY: Mapping[str, Any] = MappingProxyType({})

_CONTAINER_KEYS = frozenset(
    {
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "ArgsEscaped",
        "Healthcheck",
        "OnBuild",
        "Shell",
    }
)
_IMAGE_KEYS = frozenset(
    {
        "architecture",
        "os",
        "os.version",
        "os.features",
        "variant",
        "created",
        "author",
        "config",
        "rootfs",
        "history",
    }
)


def _frozen_json(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(copy.deepcopy(dict(value))) if value else _EMPTY


# ------------------------------------------------------------------ typed field readers


class _Reader:
    """Reads typed fields of one JSON object, naming the field in every error."""

    __slots__ = ("obj", "what")

    def __init__(self, obj: Any, what: str) -> None:
        if not isinstance(obj, dict):
            raise InvalidFormat(f"{what} must be a JSON object")
        self.obj: dict[str, Any] = obj
        self.what = what

    def _bad(self, key: str, want: str) -> InvalidFormat:
        return InvalidFormat(f"{self.what} field {key!r} must be {want}")

    def str_(self, key: str) -> str:
        value = self.obj.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def str_list(self, key: str) -> tuple[str, ...] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def key_set(self, key: str) -> tuple[str, ...]:
        # ExposedPorts and Volumes are Go map[string]struct{}: only the keys matter.
        value = self.obj.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self._bad(key, "a JSON object")
        return tuple(value)

    def str_map(self, key: str) -> Mapping[str, str]:
        value = self.obj.get(key)
        if value is None:
            return _EMPTY
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of strings")
        return MappingProxyType(dict(value))

    def bool_(self, key: str) -> bool:
        value = self.obj.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def int_(self, key: str) -> int:
        value = self.obj.get(key)
        if value is None:
            return 0
        if type(value) is not int:
            raise self._bad(key, "an integer")
        return value

    def extra(self, known: frozenset[str]) -> Mapping[str, Any]:
        return _frozen_json({k: v for k, v in self.obj.items() if k not in known})


# ------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """Docker's ``config.Healthcheck``; durations in nanoseconds, 0 meaning "inherit"."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> Healthcheck:
        r = _Reader(obj, "image config field config.Healthcheck")
        return cls(
            r.str_list("Test") or (),
            r.int_("Interval"),
            r.int_("Timeout"),
            r.int_("StartPeriod"),
            r.int_("StartInterval"),
            r.int_("Retries"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.test:
            out["Test"] = list(self.test)
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """The ``config`` object: defaults for containers run from the image.

    ``entrypoint`` and ``cmd`` are None when unset, which is not the same as set to
    empty (``ENTRYPOINT []`` clears an inherited entrypoint).
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        for name in ("env", "on_build", "shell"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Go maps (map[string]struct{}) have no order: keep these sorted and unique so
        # equal configs compare equal whatever order their JSON had.
        for name in ("exposed_ports", "volumes"):
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))
        for name in ("entrypoint", "cmd"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "extra", _frozen_json(self.extra))

    @classmethod
    def from_json(cls, obj: Any) -> ContainerConfig:
        r = _Reader(obj, "image config field 'config'")
        health = obj.get("Healthcheck")
        return cls(
            user=r.str_("User"),
            exposed_ports=r.key_set("ExposedPorts"),
            env=r.str_list("Env") or (),
            entrypoint=r.str_list("Entrypoint"),
            cmd=r.str_list("Cmd"),
            volumes=r.key_set("Volumes"),
            working_dir=r.str_("WorkingDir"),
            labels=r.str_map("Labels"),
            stop_signal=r.str_("StopSignal"),
            args_escaped=r.bool_("ArgsEscaped"),
            healthcheck=None if health is None else Healthcheck.from_json(health),
            on_build=r.str_list("OnBuild") or (),
            shell=r.str_list("Shell") or (),
            extra=r.extra(_CONTAINER_KEYS),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = copy.deepcopy(dict(self.extra))
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    def env_dict(self) -> dict[str, str]:
        """``Env`` as a mapping (later entries win, as in a process environment)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def with_env(self, key: str, value: str) -> ContainerConfig:
        """Set one variable, replacing an existing entry in place, else appending."""
        if not key or "=" in key:
            raise InvalidArgument(f"invalid environment variable name {key!r}")
        entry = f"{key}={value}"
        env = list(self.env)
        for i, item in enumerate(env):
            if item.partition("=")[0] == key:
                env[i] = entry
                break
        else:
            env.append(entry)
        return replace(self, env=tuple(env))


@dataclass(frozen=True, slots=True)
class History:
    """One ``history`` entry; ``empty_layer`` entries have no diff_id."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    @classmethod
    def from_json(cls, obj: Any, index: int) -> History:
        r = _Reader(obj, f"image config history[{index}]")
        return cls(
            r.opt_str("created"),
            r.opt_str("created_by"),
            r.opt_str("author"),
            r.opt_str("comment"),
            r.bool_("empty_layer"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (
            ("created", self.created),
            ("created_by", self.created_by),
            ("author", self.author),
            ("comment", self.comment),
        ):
            if value is not None:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True, slots=True)
class RootFS:
    """The config's ``rootfs``: the layers' diff_ids, bottom first."""

    diff_ids: tuple[Digest, ...] = ()
    type: str = "layers"


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image configuration. ``created`` is kept as the RFC 3339 text it was given."""

    architecture: str
    os: str
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    variant: str = ""
    created: str | None = None
    author: str | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        # config.md: architecture and os are REQUIRED.
        if not self.architecture or not self.os:
            raise InvalidFormat("image config must have a non-empty architecture and os")
        object.__setattr__(self, "os_features", tuple(self.os_features))
        object.__setattr__(self, "diff_ids", tuple(self.diff_ids))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "extra", _frozen_json(self.extra))

    # -------------------------------------------------------------- reading and writing

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        """Parse and validate config bytes (capped at 4 MiB)."""
        return cls.from_json(load_json_object(data, "image config"))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageConfig:
        r = _Reader(obj, "image config")
        for key in ("architecture", "os"):
            if not isinstance(obj.get(key), str) or not obj[key]:
                raise InvalidFormat(f"image config lacks required string field {key!r}")
        rootfs = obj.get("rootfs")
        if rootfs is None:
            raise InvalidFormat("image config lacks required field 'rootfs'")
        rr = _Reader(rootfs, "image config field 'rootfs'")
        # config.md: rootfs.type MUST be "layers".
        if rootfs.get("type") != "layers":
            raise InvalidFormat(
                f"image config rootfs.type is {rootfs.get('type')!r}; it must be 'layers'"
            )
        diff_ids: list[Digest] = []
        for i, text in enumerate(rr.str_list("diff_ids") or ()):
            try:
                diff_ids.append(Digest.parse(text))
            except InvalidArgument as exc:
                raise InvalidFormat(
                    f"image config rootfs.diff_ids[{i}] is not a digest: {exc.message}"
                ) from exc
        history_raw = obj.get("history")
        if history_raw is not None and not isinstance(history_raw, list):
            raise InvalidFormat("image config field 'history' must be a list")
        config_raw = obj.get("config")
        return cls(
            architecture=obj["architecture"],
            os=obj["os"],
            os_version=r.str_("os.version"),
            os_features=r.str_list("os.features") or (),
            variant=r.str_("variant"),
            created=r.opt_str("created"),
            author=r.opt_str("author"),
            config=ContainerConfig()
            if config_raw is None
            else ContainerConfig.from_json(config_raw),
            diff_ids=tuple(diff_ids),
            history=tuple(History.from_json(h, i) for i, h in enumerate(history_raw or ())),
            extra=r.extra(_IMAGE_KEYS),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = copy.deepcopy(dict(self.extra))
        out["architecture"] = self.architecture
        out["os"] = self.os
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        if self.created is not None:
            out["created"] = self.created
        if self.author is not None:
            out["author"] = self.author
        container = self.config.to_json()
        if container:
            out["config"] = container
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            out["history"] = [h.to_json() for h in self.history]
        return out

    def to_bytes(self) -> bytes:
        """Canonical JSON: the bytes lamina stores; their digest is the image ID."""
        return canonical_json(self.to_json())

    # -------------------------------------------------------------- views

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version, self.os_features)

    @property
    def rootfs(self) -> RootFS:
        return RootFS(self.diff_ids)

    @property
    def history_consistent(self) -> bool:
        """Whether history has one non-empty entry per diff_id (config.md says it should;
        real images break it, so it is reported, not enforced). True without history."""
        if not self.history:
            return True
        return sum(not h.empty_layer for h in self.history) == len(self.diff_ids)

    def layer_history(self) -> list[tuple[History, Digest | None]]:
        """Each history entry with the diff_id it made (None for empty layers, and for
        entries beyond the diff_ids of an inconsistent config)."""
        out: list[tuple[History, Digest | None]] = []
        layers = iter(self.diff_ids)
        for h in self.history:
            out.append((h, None if h.empty_layer else next(layers, None)))
        return out

    @property
    def created_datetime(self) -> datetime | None:
        return parse_rfc3339(self.created) if self.created else None

    # -------------------------------------------------------------- building

    @classmethod
    def new(cls, platform: Platform, created: str | None = None) -> ImageConfig:
        """An empty config for ``platform`` (no layers, no history)."""
        return cls(
            architecture=platform.architecture,
            os=platform.os,
            os_version=platform.os_version,
            os_features=platform.os_features,
            variant=platform.variant,
            created=created,
        )

    def with_layer(self, diff_id: Digest, history: History | None = None) -> ImageConfig:
        """Add a layer on top, with the history entry that made it."""
        if history is not None and history.empty_layer:
            raise InvalidArgument("the history entry of a layer cannot be an empty_layer one")
        entries = self.history + ((history,) if history is not None else ())
        return replace(self, diff_ids=(*self.diff_ids, diff_id), history=entries)

    def with_history(self, *entries: History) -> ImageConfig:
        """Append history entries (usually ``empty_layer`` ones: ENV, CMD, LABEL...)."""
        return replace(self, history=self.history + tuple(entries))

    def with_config(self, config: ContainerConfig) -> ImageConfig:
        return replace(self, config=config)


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(text: str) -> datetime | None:
    """A timezone-aware datetime, or None if ``text`` is not RFC 3339 (Go writes
    nanoseconds, which Python's fromisoformat does not read; they are truncated)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    date, time_, frac, zone = m.groups()
    micro = f".{frac[:6].ljust(6, '0')}" if frac else ""
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(f"{date}T{time_}{micro}{zone}")
    except ValueError:
        return None
