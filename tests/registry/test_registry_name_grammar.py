"""The registry applies ``lamina.oci.reference``'s grammar, and that grammar is the
distribution-spec's to the letter; where an image reference and a registry ``<name>``
differ on purpose, these tests pin each side."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.errors import InvalidReference
from lamina.oci.reference import (
    NAME_TOTAL_LENGTH_MAX,
    REPOSITORY_NAME_MAX,
    Reference,
    is_valid_repository,
    is_valid_tag,
)
from lamina.registry.errors import RegistryError
from lamina.registry.routes import check_name, check_tag, match

# distribution-spec "Pulling manifests", copied from the spec text as written there.
SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

_NAME_CHARS = st.text(alphabet="ab09._-/A", max_size=24)
_TAG_CHARS = st.text(alphabet="aZ09._-:/", max_size=24)


@given(_NAME_CHARS)
def test_repository_grammar_is_the_spec_expression(name: str) -> None:
    assert is_valid_repository(name) is (SPEC_NAME.fullmatch(name) is not None)


@given(_TAG_CHARS)
def test_tag_grammar_is_the_spec_expression(tag: str) -> None:
    assert is_valid_tag(tag) is (SPEC_TAG.fullmatch(tag) is not None)


@given(_NAME_CHARS)
def test_routes_accept_exactly_the_valid_repositories(name: str) -> None:
    try:
        route = match("GET", f"/v2/{name}/tags/list")
    except RegistryError as exc:
        assert exc.status in (400, 404)
        assert not is_valid_repository(name)
        return
    assert route.name == name
    assert is_valid_repository(name)


@given(_TAG_CHARS)
def test_routes_accept_exactly_the_valid_tags(tag: str) -> None:
    # A read of a tag outside the grammar is a Route that names nothing (answered 404
    # MANIFEST_UNKNOWN), never one whose ``tag`` could reach storage.
    if tag and ":" not in tag and "/" not in tag:
        got = match("GET", f"/v2/x/manifests/{tag}")
        assert (got.tag, got.unknown_tag) == ((tag, None) if is_valid_tag(tag) else (None, tag))
    try:
        route = match("PUT", f"/v2/x/manifests/{tag}")
    except RegistryError:
        assert not is_valid_tag(tag)
        return
    # a reference with ":" is a digest, never a tag
    assert route.tag == tag or (":" in tag and route.tag is None)


def test_check_name_and_check_tag_apply_the_one_grammar() -> None:
    assert check_name("library/busybox") == "library/busybox"
    assert check_tag("v1.0") == "v1.0"
    with pytest.raises(RegistryError) as name_err:
        check_name("Library/busybox")
    assert name_err.value.code == "NAME_INVALID"
    with pytest.raises(RegistryError) as tag_err:
        check_tag(".hidden")
    assert tag_err.value.code == "TAG_INVALID"


def test_tag_limit_is_128_on_both_sides() -> None:
    assert match("GET", "/v2/x/manifests/" + "t" * 128).tag == "t" * 128
    assert Reference.parse("x:" + "t" * 128).tag == "t" * 128
    with pytest.raises(RegistryError):
        match("PUT", "/v2/x/manifests/" + "t" * 129)
    assert match("GET", "/v2/x/manifests/" + "t" * 129).tag is None
    with pytest.raises(InvalidReference):
        Reference.parse("x:" + "t" * 129)


# -- where the two sides differ, on purpose ------------------------------------------


def test_server_caps_the_name_alone_reference_caps_registry_plus_name() -> None:
    assert REPOSITORY_NAME_MAX == NAME_TOTAL_LENGTH_MAX == 255
    name = "a/" * 126 + "abc"  # 255 characters
    assert match("GET", f"/v2/{name}/tags/list").name == name
    # Through any registry host the reference is longer than 255: refused.
    with pytest.raises(InvalidReference, match="over the 255 allowed"):
        Reference.parse(f"localhost:5000/{name}")
    with pytest.raises(InvalidReference, match="over the 255 allowed"):
        Reference("localhost:5000", name)
    fits = "a" * (255 - len("localhost:5000/"))
    assert Reference.parse(f"localhost:5000/{fits}").repository == fits


def test_a_bare_image_id_is_a_name_on_the_server_not_a_reference() -> None:
    image_id = "0123456789abcdef" * 4
    assert match("GET", f"/v2/{image_id}/tags/list").name == image_id
    with pytest.raises(InvalidReference, match="image ID"):
        Reference.parse(image_id)
    # With a registry in front it is a repository again, as in distribution/reference.
    assert Reference.parse(f"localhost:5000/{image_id}").repository == image_id


def test_an_uppercase_first_component_is_a_registry_host_in_a_reference() -> None:
    ref = Reference.parse("Example/app")
    assert (ref.registry, ref.repository) == ("Example", "app")
    with pytest.raises(RegistryError) as err:
        match("GET", "/v2/Example/app/tags/list")
    assert err.value.code == "NAME_INVALID"


def test_the_server_never_normalises_docker_hub_names() -> None:
    assert Reference.parse("busybox").repository == "library/busybox"
    assert match("GET", "/v2/busybox/tags/list").name == "busybox"
