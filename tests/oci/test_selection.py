"""select_manifest: platform matching in an index."""

from __future__ import annotations

import pytest

from lamina.errors import NotFound
from lamina.oci import mediatypes as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index
from lamina.oci.platform import Platform
from lamina.oci.selection import is_attestation, normalize_platform, platform_rank, select_manifest


def entry(n: int, platform: str | None, **annotations: str) -> Descriptor:
    return Descriptor(
        mt.OCI_MANIFEST,
        Digest.from_bytes(bytes([n])),
        n,
        annotations=annotations,
        platform=Platform.parse(platform) if platform else None,
    )


ATTEST = entry(90, "unknown/unknown", **{"vnd.docker.reference.type": "attestation-manifest"})

MULTI = Index(
    (
        ATTEST,
        entry(1, "linux/amd64"),
        entry(2, "linux/arm64/v8"),
        entry(3, "linux/arm/v6"),
        entry(4, "linux/arm/v7"),
        entry(5, "linux/amd64/v3"),
        entry(6, "windows/amd64"),
        entry(7, "linux/s390x"),
    )
)

# (wanted platform, index, size of the chosen entry)
CASES: list[tuple[str, Index, int]] = [
    ("linux/amd64", MULTI, 1),
    ("linux/amd64/v3", MULTI, 5),  # exact variant beats generic
    ("linux/amd64/v2", MULTI, 1),  # v3 does not run on v2; generic does
    ("linux/amd64/v4", MULTI, 5),  # closest lower variant (v3) beats generic
    ("linux/arm64", MULTI, 2),  # arm64 == arm64/v8
    ("linux/arm64/v8", MULTI, 2),
    ("linux/aarch64", MULTI, 2),  # alias
    ("linux/x86_64", MULTI, 1),
    ("linux/arm/v7", MULTI, 4),
    ("linux/arm", MULTI, 4),  # arm means arm/v7
    ("linux/arm/v6", MULTI, 3),
    ("linux/arm/v8", MULTI, 4),  # 32-bit on a v8 core: v7 is closest
    ("windows/amd64", MULTI, 6),
    ("linux/s390x", MULTI, 7),
    ("linux/arm64", Index((entry(1, "linux/arm64"),)), 1),
    ("linux/arm64/v8", Index((entry(1, "linux/arm64"),)), 1),
    ("linux/arm/v7", Index((entry(1, "linux/arm"),)), 1),
    ("linux/amd64", Index((entry(1, "linux/amd64/v2"), entry(2, "linux/amd64/v3"))), 1),
    ("linux/amd64", Index((entry(1, "linux/amd64"), entry(2, "linux/amd64"))), 1),  # first
    ("linux/amd64", Index((entry(1, "linux/arm64"), entry(2, None))), 2),  # no platform
    ("linux/amd64", Index((entry(2, None), entry(1, "linux/amd64"))), 1),  # explicit wins
]


@pytest.mark.parametrize(
    ("want", "index", "size"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_select(want: str, index: Index, size: int) -> None:
    assert select_manifest(index, Platform.parse(want)).size == size


NOT_FOUND: list[tuple[str, Index, str]] = [
    ("linux/riscv64", MULTI, "available: linux/amd64, linux/amd64/v3, linux/arm/v6"),
    ("linux/arm/v5", MULTI, "linux/arm/v5"),
    ("linux/arm64", Index((ATTEST,)), "available: none"),
    ("linux/amd64", Index(()), "available: none"),
    ("darwin/amd64", MULTI, "darwin/amd64"),
]


@pytest.mark.parametrize(("want", "index", "message"), NOT_FOUND)
def test_not_found(want: str, index: Index, message: str) -> None:
    with pytest.raises(NotFound, match=message) as info:
        select_manifest(index, Platform.parse(want))
    assert "unknown" not in info.value.message
    assert info.value.hint is not None


def test_no_variant_asked_accepts_any_variant() -> None:
    # A caller that names no variant did not restrict it (as Platform.matches does).
    idx = Index((entry(1, "linux/amd64/v3"),))
    assert select_manifest(idx, Platform("linux", "amd64")).size == 1


def test_attestations() -> None:
    assert is_attestation(ATTEST)
    assert is_attestation(entry(1, "unknown/unknown"))
    assert is_attestation(entry(1, None, **{"vnd.docker.reference.type": "attestation-manifest"}))
    assert not is_attestation(entry(1, "linux/amd64"))


def test_normalize_and_rank() -> None:
    assert normalize_platform(Platform("Linux", "AARCH64", "V8")) == Platform("linux", "arm64")
    assert normalize_platform(Platform("linux", "armhf")) == Platform("linux", "arm", "v7")
    assert normalize_platform(Platform("linux", "amd64", "v1")) == Platform("linux", "amd64")
    assert platform_rank(Platform("linux", "amd64"), Platform("linux", "arm64")) is None
    assert platform_rank(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6")) == 1
    assert platform_rank(Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7")) is None
