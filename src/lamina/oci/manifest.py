"""Image manifests and indexes (image-spec manifest.md, image-index.md) and Docker schema2.

This module parses and writes the two document kinds that point at other content:

- an image *manifest* (OCI or Docker schema2) names a ``config`` and ``layers``;
- an image *index* (OCI, or a Docker manifest list) names other ``manifests``.

Both may name a ``subject`` (the referrers API, image-spec manifest.md "subject").
Docker schema2 documents parse into the same values and keep their ``media_type``;
:mod:`lamina.oci.docker` converts between the two families.

Reading is strict about what the spec requires and lenient about what it does not
know: unknown fields are ignored (image-spec considerations.md "Extensibility").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lamina.errors import InvalidFormat, Unsupported
from lamina.oci import mediatypes as mt
from lamina.oci.canonical import MAX_DOCUMENT_BYTES, canonical_json, load_json_object
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.platform import Platform

_NO_ANNOTATIONS: Mapping[str, str] = MappingProxyType({})

DOCKER_SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


def _annotations(obj: dict[str, Any], what: str) -> Mapping[str, str]:
    raw = obj.get("annotations")
    if raw is None:
        return _NO_ANNOTATIONS
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise InvalidFormat(f"{what} has malformed annotations (want string to string)")
    return MappingProxyType(dict(raw))


def _freeze_annotations(value: Mapping[str, str]) -> Mapping[str, str]:
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value)) if value else _NO_ANNOTATIONS


def _optional_str(obj: dict[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidFormat(f"{what} field {key!r} must be a string")
    return value or None


def _check_schema_version(obj: dict[str, Any], what: str) -> None:
    version = obj.get("schemaVersion")
    # manifest.md / image-index.md: schemaVersion MUST be 2 (bool is not an int here).
    if version == 1 and type(version) is int:
        raise Unsupported(
            f"{what} is Docker schema 1, which lamina does not read",
            hint="re-push the image with a current docker, buildah or skopeo (schema 2)",
        )
    if type(version) is not int or version != 2:
        raise InvalidFormat(f"{what} has schemaVersion {version!r}; it must be 2")


def _resolve_media_type(
    obj: dict[str, Any], given: str | None, allowed: frozenset[str], what: str
) -> str:
    """The document's media type: the JSON's and the caller's must agree.

    GHSA-77vh-xpmg-72qh (CVE-2021-41190): a document that can be read as both a manifest
    and an index lets two clients see two different images behind one digest. So the
    ``mediaType`` inside the JSON, when present, must equal the one the caller was told
    (for example a registry's Content-Type) and be of the kind being parsed.
    """
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidFormat(f"{what} field 'mediaType' must be a string")
    given = given or None  # an empty Content-Type says nothing
    if given is not None and given not in allowed:
        if given in DOCKER_SCHEMA1_TYPES:
            _check_schema_version({"schemaVersion": 1}, what)
        raise InvalidFormat(
            f"{what}: media type {given!r} is not one of {', '.join(sorted(allowed))}"
        )
    if declared:
        if declared not in allowed:
            raise InvalidFormat(
                f"{what} declares mediaType {declared!r}, not one of {', '.join(sorted(allowed))}"
            )
        if given is not None and declared != given:
            raise InvalidFormat(
                f"{what} declares mediaType {declared!r} but was served as {given!r}",
                hint="the document and its descriptor or Content-Type disagree; refuse it",
            )
        return declared
    if given is not None:
        return given
    # manifest.md: mediaType is only SHOULD; absent and unannounced means OCI.
    return mt.OCI_MANIFEST if mt.OCI_MANIFEST in allowed else mt.OCI_INDEX


def _descriptors(
    obj: dict[str, Any], key: str, what: str, required: bool
) -> tuple[Descriptor, ...]:
    items = obj.get(key)
    if items is None:
        if required:
            raise InvalidFormat(f"{what} lacks required field {key!r}")
        return ()
    if not isinstance(items, list):
        raise InvalidFormat(f"{what} field {key!r} must be a JSON array")
    return tuple(Descriptor.from_json(item, f"{what} {key}[{i}]") for i, item in enumerate(items))


def _subject(obj: dict[str, Any], what: str) -> Descriptor | None:
    raw = obj.get("subject")
    return None if raw is None else Descriptor.from_json(raw, f"{what} subject")


def _document_json(
    schema: dict[str, Any],
    artifact_type: str | None,
    subject: Descriptor | None,
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    if artifact_type:
        schema["artifactType"] = artifact_type
    if subject is not None:
        schema["subject"] = subject.to_json()
    if annotations:
        schema["annotations"] = dict(annotations)
    return schema


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI ``image.manifest.v1`` or Docker ``manifest.v2``)."""

    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_MANIFEST
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _NO_ANNOTATIONS)

    def __post_init__(self) -> None:
        if self.media_type not in mt.MANIFEST_TYPES:
            raise InvalidFormat(f"{self.media_type!r} is not an image manifest media type")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "annotations", _freeze_annotations(self.annotations))

    @classmethod
    def parse(cls, data: bytes, media_type: str | None = None) -> Manifest:
        """Parse and validate manifest bytes; ``media_type`` is what the caller was told."""
        return cls.from_json(load_json_object(data, "manifest"), media_type)

    @classmethod
    def from_json(cls, obj: dict[str, Any], media_type: str | None = None) -> Manifest:
        what = "manifest"
        _check_schema_version(obj, what)
        resolved = _resolve_media_type(obj, media_type, mt.MANIFEST_TYPES, what)
        # GHSA-77vh-xpmg-72qh: an image manifest must not also read as an index.
        if "manifests" in obj:
            raise InvalidFormat(
                "manifest has a 'manifests' field, which only an index may have",
                hint="a document that reads as both a manifest and an index is refused",
            )
        if obj.get("config") is None:
            raise InvalidFormat("manifest lacks required field 'config'")
        return cls(
            config=Descriptor.from_json(obj["config"], "manifest config"),
            # manifest.md: layers is REQUIRED (an array; SHOULD have at least one item).
            layers=_descriptors(obj, "layers", what, required=True),
            media_type=resolved,
            artifact_type=_optional_str(obj, "artifactType", what),
            subject=_subject(obj, what),
            annotations=_annotations(obj, what),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        return _document_json(out, self.artifact_type, self.subject, self.annotations)

    def to_bytes(self) -> bytes:
        """Canonical JSON; the bytes lamina stores and digests."""
        return _capped(canonical_json(self.to_json()), "manifest")

    def to_descriptor(
        self,
        platform: Platform | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """The descriptor of :meth:`to_bytes` (not of the bytes this was parsed from)."""
        data = self.to_bytes()
        return Descriptor(
            self.media_type,
            Digest.from_bytes(data),
            len(data),
            annotations=_freeze_annotations(annotations or {}),
            artifact_type=self.artifact_type,
            platform=platform,
        )

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (OCI ``image.index.v1``) or a Docker manifest list."""

    manifests: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_INDEX
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _NO_ANNOTATIONS)

    def __post_init__(self) -> None:
        if self.media_type not in mt.INDEX_TYPES:
            raise InvalidFormat(f"{self.media_type!r} is not an image index media type")
        object.__setattr__(self, "manifests", tuple(self.manifests))
        object.__setattr__(self, "annotations", _freeze_annotations(self.annotations))

    @classmethod
    def parse(cls, data: bytes, media_type: str | None = None) -> Index:
        """Parse and validate index bytes; ``media_type`` is what the caller was told."""
        return cls.from_json(load_json_object(data, "index"), media_type)

    @classmethod
    def from_json(cls, obj: dict[str, Any], media_type: str | None = None) -> Index:
        what = "index"
        _check_schema_version(obj, what)
        resolved = _resolve_media_type(obj, media_type, mt.INDEX_TYPES, what)
        # GHSA-77vh-xpmg-72qh: an index must not also read as an image manifest.
        for key in ("config", "layers"):
            if key in obj:
                raise InvalidFormat(
                    f"index has a {key!r} field, which only an image manifest may have",
                    hint="a document that reads as both a manifest and an index is refused",
                )
        return cls(
            # image-index.md: manifests is REQUIRED (an array, possibly empty).
            manifests=_descriptors(obj, "manifests", what, required=True),
            media_type=resolved,
            artifact_type=_optional_str(obj, "artifactType", what),
            subject=_subject(obj, what),
            annotations=_annotations(obj, what),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_json() for m in self.manifests],
        }
        return _document_json(out, self.artifact_type, self.subject, self.annotations)

    def to_bytes(self) -> bytes:
        """Canonical JSON; the bytes lamina stores and digests."""
        return _capped(canonical_json(self.to_json()), "index")

    def to_descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        """The descriptor of :meth:`to_bytes` (not of the bytes this was parsed from)."""
        data = self.to_bytes()
        return Descriptor(
            self.media_type,
            Digest.from_bytes(data),
            len(data),
            annotations=_freeze_annotations(annotations or {}),
            artifact_type=self.artifact_type,
        )

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST_LIST

    def with_manifests(self, manifests: tuple[Descriptor, ...]) -> Index:
        return Index(manifests, self.media_type, self.artifact_type, self.subject, self.annotations)


def _capped(data: bytes, what: str) -> bytes:
    # Whatever lamina writes it must be able to read back (and so must other tools).
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidFormat(f"{what} would be {len(data)} bytes, over the 4 MiB cap")
    return data


def parse_document(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index, by ``media_type`` or, if that is not a known manifest
    or index type (None, ``application/json``...), by the JSON's own ``mediaType``, then
    by its shape. A document whose kind cannot be told is refused."""
    if media_type in mt.MANIFEST_TYPES:
        return Manifest.parse(data, media_type)
    if media_type in mt.INDEX_TYPES:
        return Index.parse(data, media_type)
    if media_type in DOCKER_SCHEMA1_TYPES:
        _check_schema_version({"schemaVersion": 1}, "manifest")
    obj = load_json_object(data, "manifest or index")
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        # an object or a list is unhashable: the set lookups below would raise TypeError
        raise InvalidFormat("manifest or index field 'mediaType' must be a string")
    if declared in mt.MANIFEST_TYPES:
        return Manifest.from_json(obj)
    if declared in mt.INDEX_TYPES:
        return Index.from_json(obj)
    if declared is not None:
        if obj.get("schemaVersion") == 1:
            _check_schema_version(obj, "manifest")
        raise InvalidFormat(f"document has mediaType {declared!r}, not a manifest or index")
    has_index = "manifests" in obj
    has_manifest = "config" in obj or "layers" in obj
    if has_index and has_manifest:
        raise InvalidFormat(
            "ambiguous document: it has both 'manifests' and 'config'/'layers' and no mediaType",
            hint="ambiguous manifest/index documents are refused (GHSA-77vh-xpmg-72qh)",
        )
    if has_index:
        return Index.from_json(obj)
    if has_manifest:
        return Manifest.from_json(obj)
    if obj.get("schemaVersion") == 1:
        _check_schema_version(obj, "manifest")
    raise InvalidFormat("document is neither an image manifest nor an index")


def _sniff_kind(obj: dict[str, Any]) -> str:
    """Which document an object is: "manifest", "index" or "" (neither).

    The JSON ``mediaType`` wins when it is a known manifest or index type; otherwise the
    shape decides (image-spec image-index.md: mediaType is only SHOULD).
    """
    declared = obj.get("mediaType")
    if not isinstance(declared, str):
        declared = None  # unhashable or absent: the shape decides
    if declared in mt.MANIFEST_TYPES:
        return "manifest"
    if declared in mt.INDEX_TYPES:
        return "index"
    if isinstance(obj.get("manifests"), list):
        return "index"
    if isinstance(obj.get("config"), dict) or isinstance(obj.get("layers"), list):
        return "manifest"
    return ""


def referenced_descriptors(media_type: str, data: bytes) -> list[Descriptor]:
    """The descriptors a blob points at: what a garbage collector must keep alive.

    For an image manifest (OCI or Docker schema2): config, layers, then subject. For an
    index or a Docker manifest list: manifests, then subject. For anything else (configs,
    layers, unknown blobs) ``[]``. When ``media_type`` is not a manifest or index type
    (for example empty, or ``application/octet-stream``) a small JSON object is sniffed
    by its own ``mediaType`` or shape, so documents typed only inside their JSON count.

    Raises InvalidFormat if a blob typed as a manifest or index is malformed, so a
    collector stops instead of sweeping the children of a document it cannot read.
    """
    declared = media_type in mt.MANIFEST_TYPES or media_type in mt.INDEX_TYPES
    if not declared:
        # Layers and configs never point at anything; skip parsing them.
        if mt.is_layer(media_type) or media_type in mt.CONFIG_TYPES or media_type == mt.OCI_EMPTY:
            return []
        if len(data) > MAX_DOCUMENT_BYTES or data.lstrip()[:1] != b"{":
            return []
        try:
            obj = load_json_object(data, "blob")
        except InvalidFormat:
            return []
        kind = _sniff_kind(obj)
    else:
        obj = load_json_object(data, media_type)
        kind = "manifest" if media_type in mt.MANIFEST_TYPES else "index"
    if not kind:
        return []
    # Collect every descriptor field present, whatever the kind: a confused document
    # (a manifest with ``manifests``, GHSA-77vh-xpmg-72qh) keeps all it names alive.
    what = kind
    out: list[Descriptor] = []
    config = obj.get("config")
    if config is not None:
        out.append(Descriptor.from_json(config, f"{what} config"))
    out.extend(_descriptors(obj, "layers", what, required=False))
    out.extend(_descriptors(obj, "manifests", what, required=False))
    subject = _subject(obj, what)
    if subject is not None:
        out.append(subject)
    return out
