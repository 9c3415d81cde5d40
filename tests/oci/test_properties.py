"""Property tests: what lamina writes it reads back to the same value."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lamina.errors import InvalidFormat
from lamina.oci import mediatypes as mt
from lamina.oci.config import ContainerConfig, History, ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, parse_document
from lamina.oci.platform import Platform
from lamina.oci.reference import Reference

settings.register_profile("oci", max_examples=60, deadline=None)
settings.load_profile("oci")

alnum = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
component = st.builds(
    lambda parts, seps: parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=False)),
    st.lists(alnum, min_size=1, max_size=3),
    st.lists(st.sampled_from([".", "_", "__", "-", "--"]), min_size=2, max_size=2),
)
registry = st.one_of(
    st.just(None),
    st.sampled_from(["localhost", "localhost:5000", "example.com", "127.0.0.1:5000", "[::1]:443"]),
)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digest = st.binary(max_size=8).map(Digest.from_bytes)


@given(registry, st.lists(component, min_size=1, max_size=3), st.none() | tag, st.none() | digest)
def test_reference_round_trip(
    reg: str | None, path: list[str], t: str | None, d: Digest | None
) -> None:
    # Without a registry, a first component with a "." would be read as a host.
    assume(reg is not None or len(path) == 1 or "." not in path[0])
    text = "/".join(([reg] if reg else []) + path)
    text += (f":{t}" if t else "") + (f"@{d}" if d else "")
    ref = Reference.parse(text)
    assert ref.tag == (t if t or d else "latest")
    assert ref.digest == d
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar()) == ref
    assert str(ref).endswith(text.split("/")[-1] if t or d else path[-1] + ":latest")


media_type = st.sampled_from(
    [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, mt.OCI_LAYER, "application/vnd.example+json"]
)
annotations = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
platform = st.builds(
    Platform,
    st.sampled_from(["linux", "windows"]),
    st.sampled_from(["amd64", "arm64", "arm"]),
    st.sampled_from(["", "v7", "v8"]),
)


@st.composite
def descriptors(draw: st.DrawFn, with_platform: bool = False) -> Descriptor:
    data = draw(st.none() | st.binary(max_size=4))
    body = data if data is not None else draw(st.binary(max_size=8))
    return Descriptor(
        draw(media_type),
        Digest.from_bytes(body),
        len(body),
        urls=tuple(draw(st.lists(st.just("https://example.com/b"), max_size=1))),
        annotations=draw(annotations),
        data=data,
        artifact_type=draw(st.none() | st.just("application/x.a")),
        platform=draw(platform) if with_platform else None,
    )


@given(
    descriptors(),
    st.lists(descriptors(), max_size=4),
    st.none() | st.just("application/x.art"),
    st.none() | descriptors(),
    annotations,
)
def test_manifest_round_trip(
    config: Descriptor,
    layers: list[Descriptor],
    artifact_type: str | None,
    subject: Descriptor | None,
    notes: dict[str, str],
) -> None:
    m = Manifest(config, tuple(layers), mt.OCI_MANIFEST, artifact_type, subject, notes)
    data = m.to_bytes()
    assert Manifest.parse(data, mt.OCI_MANIFEST) == m
    assert parse_document(data) == m
    with pytest.raises(InvalidFormat):
        Index.parse(data)  # a manifest never reads as an index


@given(st.lists(descriptors(with_platform=True), max_size=4), annotations)
def test_index_round_trip(manifests: list[Descriptor], notes: dict[str, str]) -> None:
    idx = Index(tuple(manifests), annotations=notes)
    data = idx.to_bytes()
    assert Index.parse(data) == idx
    assert parse_document(data, None) == idx
    with pytest.raises(InvalidFormat):
        Manifest.parse(data)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
strs = st.lists(st.text(max_size=6), max_size=3).map(tuple)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=6).map(lambda s: "x-" + s), json_value, max_size=3
    ),
    st.dictionaries(st.text(min_size=1, max_size=6).map(lambda s: "X" + s), json_value, max_size=3),
    strs,
    st.none() | strs,
    st.lists(digest, max_size=3),
    st.lists(
        st.builds(
            History,
            st.none() | st.text(max_size=5),
            st.none() | st.text(max_size=5),
            st.none(),
            st.none(),
            st.booleans(),
        ),
        max_size=3,
    ),
)
def test_config_round_trip_keeps_unknown_fields(
    top: dict[str, object],
    inner: dict[str, object],
    env: tuple[str, ...],
    cmd: tuple[str, ...] | None,
    diff_ids: list[Digest],
    history: list[History],
) -> None:
    c = ImageConfig(
        "amd64",
        "linux",
        config=ContainerConfig(env=env, cmd=cmd, extra=inner),
        diff_ids=tuple(diff_ids),
        history=tuple(history),
        extra=top,
    )
    data = c.to_bytes()
    again = ImageConfig.parse(data)
    assert again == c
    out = json.loads(data)
    for k, v in top.items():
        assert out[k] == v
    for k, v in inner.items():
        assert out["config"][k] == v
