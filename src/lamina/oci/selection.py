"""Choosing the manifest for a platform from an index (image-index.md "platform").

Matching follows what containerd and Docker do: os and architecture must be equal
(after normalising aliases such as ``aarch64`` -> ``arm64``); variants are compatible
downwards for arm (a v7 host runs v6 and v5 images) and amd64 (a v3 host runs v2 and
v1); an image without a variant runs anywhere its architecture does. The closest match
wins; ties go to the earlier entry. BuildKit attestation manifests (platform
``unknown/unknown``) are never chosen.
"""

from __future__ import annotations

from lamina.errors import NotFound
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.manifest import Index
from lamina.oci.platform import Platform

ANNOTATION_REFERENCE_TYPE = "vnd.docker.reference.type"

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}
# variants that mean "the baseline" of an architecture
_BASELINE_VARIANT = {"arm64": {"v8"}, "amd64": {"v1"}, "arm": {"v7"}}


def normalize_platform(p: Platform) -> Platform:
    """Lower-case os and architecture, map aliases, drop baseline variants
    (arm64/v8, amd64/v1; arm with no variant means v7)."""
    os_ = p.os.lower()
    arch, variant = p.architecture.lower(), p.variant.lower()
    if arch in _ARCH_ALIASES:
        arch, implied = _ARCH_ALIASES[arch]
        variant = variant or implied
    if arch == "arm" and not variant:
        variant = "v7"
    if arch != "arm" and variant in _BASELINE_VARIANT.get(arch, set()):
        variant = ""
    return Platform(os_, arch, variant, p.os_version, p.os_features)


def is_attestation(d: Descriptor) -> bool:
    if d.annotations.get(ANNOTATION_REFERENCE_TYPE) == "attestation-manifest":
        return True
    return d.platform is not None and (d.platform.os, d.platform.architecture) == (
        "unknown",
        "unknown",
    )


def _variant_level(variant: str) -> int | None:
    if len(variant) >= 2 and variant[0] == "v" and variant[1:].isdigit():
        return int(variant[1:])
    return None


def platform_rank(want: Platform, have: Platform) -> int | None:
    """How well an image for ``have`` fits a host ``want``: 0 is exact, larger is worse,
    None is "does not run"."""
    w, h = normalize_platform(want), normalize_platform(have)
    if (w.os, w.architecture) != (h.os, h.architecture):
        return None
    if w.variant == h.variant:
        return 0
    if not h.variant:
        return 50  # a generic image for the architecture
    if not want.variant and w.architecture != "arm":
        return 60  # the caller did not say: any variant will do, but prefer generic
    wl, hl = _variant_level(w.variant), _variant_level(h.variant)
    if w.architecture in ("arm", "amd64") and wl is not None and hl is not None and hl < wl:
        return wl - hl
    return None


def select_manifest(index: Index, platform: Platform) -> Descriptor:
    """The entry of ``index`` that best runs on ``platform``.

    Raises NotFound, naming the platforms the index has, when none fits.
    """
    best: tuple[int, int, Descriptor] | None = None
    unplatformed: list[Descriptor] = []
    for position, entry in enumerate(index.manifests):
        if is_attestation(entry):
            continue
        if entry.platform is None:
            if entry.media_type in mt.MANIFEST_TYPES or entry.media_type in mt.INDEX_TYPES:
                unplatformed.append(entry)
            continue
        rank = platform_rank(platform, entry.platform)
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, entry)
    if best is not None:
        return best[2]
    # containerd treats an entry without a platform as matching any (image-index.md:
    # platform is OPTIONAL); only fall back to it when nothing was explicitly right.
    if unplatformed:
        return unplatformed[0]
    available = sorted(
        {str(e.platform) for e in index.manifests if e.platform and not is_attestation(e)}
    )
    raise NotFound(
        f"no manifest for platform {platform} in the index; "
        f"available: {', '.join(available) or 'none'}",
        hint="choose one of the available platforms with --platform",
    )
