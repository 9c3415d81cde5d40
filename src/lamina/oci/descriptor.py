"""Descriptors (image-spec descriptor.md): a typed, sized, digested pointer to content."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lamina.errors import InvalidArgument, InvalidFormat
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform

_NO_ANNOTATIONS: Mapping[str, str] = MappingProxyType({})
_MAX_SIZE = (1 << 63) - 1  # descriptor.md: size is an int64


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: media type, digest and size of one blob."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=lambda: _NO_ANNOTATIONS)
    data: bytes | None = None
    artifact_type: str | None = None
    platform: Platform | None = None

    def __post_init__(self) -> None:
        if not self.media_type:
            raise InvalidFormat("descriptor has no mediaType")
        if self.size < 0:
            raise InvalidFormat(f"descriptor of {self.digest} has negative size {self.size}")
        if self.size > _MAX_SIZE:
            raise InvalidFormat(f"descriptor of {self.digest} has size {self.size}, over int64")
        # descriptor.md "Embedded content": data MUST match size and digest.
        if self.data is not None:
            if len(self.data) != self.size:
                raise InvalidFormat(f"descriptor of {self.digest}: embedded data size mismatch")
            self.digest.verify(self.data)

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            self.urls,
            MappingProxyType(dict(annotations)),
            self.data,
            self.artifact_type,
            self.platform,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidFormat(f"{what} must be a JSON object")
        try:
            media_type = obj["mediaType"]
            digest = Digest.parse(obj["digest"])
            size = obj["size"]
        except KeyError as exc:
            raise InvalidFormat(f"{what} lacks required field {exc.args[0]!r}") from exc
        except (TypeError, AttributeError) as exc:
            raise InvalidFormat(f"{what} has a malformed digest") from exc
        except InvalidArgument as exc:
            raise InvalidFormat(f"{what} has an invalid digest: {exc.message}") from exc
        if not isinstance(media_type, str) or type(size) is not int:
            raise InvalidFormat(f"{what} has a malformed mediaType or size")
        data = None
        if obj.get("data") is not None:
            try:
                data = base64.b64decode(obj["data"], validate=True)
            except (ValueError, TypeError) as exc:  # binascii.Error; non-ASCII text
                raise InvalidFormat(f"{what} has invalid base64 data") from exc
        annotations = obj.get("annotations") or {}
        urls = obj.get("urls") or []
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InvalidFormat(f"{what} has malformed annotations")
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidFormat(f"{what} has malformed urls")
        platform = obj.get("platform")
        artifact_type = obj.get("artifactType")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(urls),
            annotations=MappingProxyType(dict(annotations)),
            data=data,
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            platform=Platform.from_json(platform) if platform is not None else None,
        )
