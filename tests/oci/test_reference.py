"""Reference parsing, normalisation and printing (distribution/reference behaviour)."""

from __future__ import annotations

import pytest

from lamina.errors import InvalidReference
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference, is_valid_repository, is_valid_tag

HEX = "a" * 64
DGST = f"sha256:{HEX}"

# text -> (registry, repository, tag, digest, str(), familiar())
VALID: list[tuple[str, str, str, str | None, str | None, str, str]] = [
    (
        "busybox",
        "docker.io",
        "library/busybox",
        "latest",
        None,
        "docker.io/library/busybox:latest",
        "busybox:latest",
    ),
    (
        "busybox:1.36",
        "docker.io",
        "library/busybox",
        "1.36",
        None,
        "docker.io/library/busybox:1.36",
        "busybox:1.36",
    ),
    (
        "library/busybox",
        "docker.io",
        "library/busybox",
        "latest",
        None,
        "docker.io/library/busybox:latest",
        "busybox:latest",
    ),
    (
        "docker.io/busybox",
        "docker.io",
        "library/busybox",
        "latest",
        None,
        "docker.io/library/busybox:latest",
        "busybox:latest",
    ),
    (
        "docker.io/library/busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        None,
        "docker.io/library/busybox:latest",
        "busybox:latest",
    ),
    (
        "index.docker.io/library/busybox:1",
        "docker.io",
        "library/busybox",
        "1",
        None,
        "docker.io/library/busybox:1",
        "busybox:1",
    ),
    (
        "index.docker.io/busybox",
        "docker.io",
        "library/busybox",
        "latest",
        None,
        "docker.io/library/busybox:latest",
        "busybox:latest",
    ),
    ("user/app:1", "docker.io", "user/app", "1", None, "docker.io/user/app:1", "user/app:1"),
    (
        "library/a/b",
        "docker.io",
        "library/a/b",
        "latest",
        None,
        "docker.io/library/a/b:latest",
        "library/a/b:latest",
    ),
    (
        "localhost/foo",
        "localhost",
        "foo",
        "latest",
        None,
        "localhost/foo:latest",
        "localhost/foo:latest",
    ),
    (
        "localhost:5000/x:t",
        "localhost:5000",
        "x",
        "t",
        None,
        "localhost:5000/x:t",
        "localhost:5000/x:t",
    ),
    (
        f"localhost:5000/a/b:tag@{DGST}",
        "localhost:5000",
        "a/b",
        "tag",
        DGST,
        f"localhost:5000/a/b:tag@{DGST}",
        f"localhost:5000/a/b:tag@{DGST}",
    ),
    (
        "127.0.0.1:5000/x",
        "127.0.0.1:5000",
        "x",
        "latest",
        None,
        "127.0.0.1:5000/x:latest",
        "127.0.0.1:5000/x:latest",
    ),
    (
        "[::1]:5000/x/y",
        "[::1]:5000",
        "x/y",
        "latest",
        None,
        "[::1]:5000/x/y:latest",
        "[::1]:5000/x/y:latest",
    ),
    ("[fe80::1]/x", "[fe80::1]", "x", "latest", None, "[fe80::1]/x:latest", "[fe80::1]/x:latest"),
    (
        "example.com/a/b/c",
        "example.com",
        "a/b/c",
        "latest",
        None,
        "example.com/a/b/c:latest",
        "example.com/a/b/c:latest",
    ),
    (
        "quay.io/org/img@" + DGST,
        "quay.io",
        "org/img",
        None,
        DGST,
        f"quay.io/org/img@{DGST}",
        f"quay.io/org/img@{DGST}",
    ),
    (
        f"busybox@{DGST}",
        "docker.io",
        "library/busybox",
        None,
        DGST,
        f"docker.io/library/busybox@{DGST}",
        f"busybox@{DGST}",
    ),
    (
        "a__b/c-d--e/f.g_h",
        "docker.io",
        "a__b/c-d--e/f.g_h",
        "latest",
        None,
        "docker.io/a__b/c-d--e/f.g_h:latest",
        "a__b/c-d--e/f.g_h:latest",
    ),
    (
        "host:5000",
        "docker.io",
        "library/host",
        "5000",
        None,
        "docker.io/library/host:5000",
        "host:5000",
    ),  # no slash: "5000" is a tag
    ("Foo/bar", "Foo", "bar", "latest", None, "Foo/bar:latest", "Foo/bar:latest"),
    (
        "my-registry.local:443/team/app:v1.2.3-rc_1",
        "my-registry.local:443",
        "team/app",
        "v1.2.3-rc_1",
        None,
        "my-registry.local:443/team/app:v1.2.3-rc_1",
        "my-registry.local:443/team/app:v1.2.3-rc_1",
    ),
    (
        "busybox:Latest",
        "docker.io",
        "library/busybox",
        "Latest",
        None,
        "docker.io/library/busybox:Latest",
        "busybox:Latest",
    ),
    (
        "busybox:_x",
        "docker.io",
        "library/busybox",
        "_x",
        None,
        "docker.io/library/busybox:_x",
        "busybox:_x",
    ),
    (
        "busybox:" + "t" * 128,
        "docker.io",
        "library/busybox",
        "t" * 128,
        None,
        "docker.io/library/busybox:" + "t" * 128,
        "busybox:" + "t" * 128,
    ),
    (
        f"sha256:{HEX}",
        "docker.io",
        "library/sha256",
        HEX,
        None,
        f"docker.io/library/sha256:{HEX}",
        f"sha256:{HEX}",
    ),
]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "full", "familiar"),
    VALID,
    ids=[v[0][:60] for v in VALID],
)
def test_valid(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    full: str,
    familiar: str,
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert (str(ref.digest) if ref.digest else None) == digest
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{registry}/{repository}"
    # printing and parsing again is the identity, in both forms
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar()) == ref


INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("UPPER", "must be lowercase"),
    ("library/Busybox", "must be lowercase"),
    ("docker.io/Library/busybox", "must be lowercase"),
    ("localhost:5000/App:1", "must be lowercase"),
    ("busybox:", "invalid reference format"),
    (":tag", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),  # fewer than 32 hex digits
    (f"busybox@sha256:{'a' * 40}", "invalid digest"),  # wrong length for sha256
    (f"busybox@md5:{'a' * 32}", "invalid digest"),  # unknown algorithm
    (f"busybox@sha256:{'A' * 64}", "invalid digest"),  # uppercase hex
    ("a/b/", "invalid reference format"),
    ("/a", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("a:b:c", "invalid reference format"),
    ("-abc", "invalid reference format"),
    ("abc-", "invalid reference format"),
    ("a___b", "invalid reference format"),
    ("a..b", "invalid reference format"),
    ("a.-b", "invalid reference format"),
    ("busybox:-tag", "invalid reference format"),
    ("busybox:.tag", "invalid reference format"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("a b", "invalid reference format"),
    (" busybox", "invalid reference format"),
    ("busybox ", "invalid reference format"),
    ("busybox:tag@", "invalid reference format"),
    ("localhost:port/x", "invalid reference format"),
    ("-host.com/x", "invalid reference format"),
    ("ex_ample.com/x", "invalid reference format"),
    ("busybox:t\u00e9", "invalid reference format"),  # \w is ASCII only
    ("caf\u00e9", "invalid reference format"),
    (HEX, "image ID"),
    ("x" * 2000, "too long"),
    ("example.com/" + "a" * 244, "over the 255"),
    ("a" * 240, "over the 255"),  # docker.io/library/ counts
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[i[0][:40] for i in INVALID])
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        Reference.parse(text)


def test_length_limit_is_exact() -> None:
    ok = "example.com/" + "a" * (255 - len("example.com/"))
    assert len(Reference.parse(ok).name) == 255
    with pytest.raises(InvalidReference):
        Reference.parse(ok + "a")


def test_uppercase_has_a_hint() -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse("MyApp:1")
    assert info.value.hint is not None and "'library/myapp'" in info.value.hint


def test_default_tag() -> None:
    assert Reference.parse("busybox", default_tag=None).tag is None
    assert str(Reference.parse("busybox", default_tag=None)) == "docker.io/library/busybox"
    assert Reference.parse("busybox", default_tag="stable").tag == "stable"
    assert Reference.parse("busybox:1", default_tag="stable").tag == "1"
    assert Reference.parse(f"busybox@{DGST}", default_tag="stable").tag is None


def test_with_tag_and_digest() -> None:
    ref = Reference.parse("localhost:5000/app:1")
    d = Digest.parse(DGST)
    assert str(ref.with_tag("2")) == "localhost:5000/app:2"
    assert str(ref.with_digest(d)) == f"localhost:5000/app:1@{DGST}"
    assert str(ref.with_tag(None).with_digest(d)) == f"localhost:5000/app@{DGST}"
    assert ref.with_digest(d).with_digest(None) == ref
    with pytest.raises(InvalidReference, match="invalid tag"):
        ref.with_tag("bad tag")


def test_constructor_normalises_and_validates() -> None:
    assert Reference("index.docker.io", "busybox", "1") == Reference.parse("busybox:1")
    assert Reference("docker.io", "library/busybox").tag is None
    with pytest.raises(InvalidReference, match="invalid registry"):
        Reference("bad host", "x")
    with pytest.raises(InvalidReference, match="invalid repository") as info:
        Reference("example.com", "Upper")
    assert info.value.hint == "repository names are lowercase"
    with pytest.raises(InvalidReference, match="invalid repository"):
        Reference("example.com", "")


def test_familiar_name() -> None:
    assert Reference.parse("busybox").familiar_name == "busybox"
    assert Reference.parse("user/app").familiar_name == "user/app"
    assert Reference.parse("ghcr.io/o/a").familiar_name == "ghcr.io/o/a"


@pytest.mark.parametrize(
    ("tag", "ok"),
    [
        ("latest", True),
        ("1.0", True),
        ("_", True),
        ("A-b.C_d", True),
        ("t" * 128, True),
        ("t" * 129, False),
        ("", False),
        (".x", False),
        ("-x", False),
        ("a:b", False),
        ("a/b", False),
        ("\u00e9", False),
    ],
)
def test_is_valid_tag(tag: str, ok: bool) -> None:
    assert is_valid_tag(tag) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("library/busybox", True),
        ("a", True),
        ("a/b/c", True),
        ("a-b__c.d", True),
        ("A", False),
        ("a/", False),
        ("", False),
        ("a" * 256, False),
    ],
)
def test_is_valid_repository(name: str, ok: bool) -> None:
    assert is_valid_repository(name) is ok


@pytest.mark.parametrize(
    "text",
    [
        "docker.io/ocker.io/u1.2",
        "docker.io/a.b/c:1",
        "docker.io/h:5/x",
        "docker.io/docker.io/u/2j/r.u/i2",
        "docker.io/localhost/x",
    ],
)
def test_familiar_form_keeps_docker_io_when_the_repository_looks_like_a_host(text: str) -> None:
    # found by fuzz/targets/reference.py: "docker.io/a.b/c" was shown as "a.b/c", which
    # reads back as repository "c" on registry "a.b"
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        return  # not a name at all: nothing to show
    assert Reference.parse(ref.familiar()) == ref
    assert ref.familiar().startswith("docker.io/")
