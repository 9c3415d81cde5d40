"""Platforms (image-spec image-index.md, "platform")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lamina.errors import InvalidArgument, InvalidFormat

# uname -m -> GOARCH, the spelling OCI uses
_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform (os, architecture, variant, ...)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine  # what platform.machine() reads, without importing it
        arch = _ARCH.get(machine, machine)
        return cls("linux", arch, "v8" if arch == "arm64" else "")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as ``--platform`` takes it."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(
                f"invalid platform {text!r}", hint="use os/arch[/variant], e.g. linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def matches(self, other: Platform) -> bool:
        """True if an image for ``other`` runs on ``self`` (variant only checked when both set)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not (self.variant and other.variant and self.variant != other.variant)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Platform:
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("os"), str)
            or not isinstance(obj.get("architecture"), str)
        ):
            raise InvalidFormat("platform must have string os and architecture")
        feats = obj.get("os.features") or []
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise InvalidFormat("platform os.features must be a list of strings")
        variant = obj.get("variant") or ""
        os_version = obj.get("os.version") or ""
        if not isinstance(variant, str) or not isinstance(os_version, str):
            raise InvalidFormat("platform variant and os.version must be strings")
        return cls(obj["os"], obj["architecture"], variant, os_version, tuple(feats))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
