"""Route matching for every endpoint of the distribution spec, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.oci.digest import Digest
from lamina.oci.reference import is_valid_repository, is_valid_tag
from lamina.registry import routes as r
from lamina.registry.errors import RegistryError
from lamina.registry.routes import Route, match

D256 = "sha256:" + "a" * 64
D512 = "sha512:" + "b" * 128
DG = Digest.parse(D256)


@pytest.mark.parametrize(
    ("method", "path", "query", "want"),
    [
        ("GET", "/v2/", "", Route(r.BASE, "GET")),
        ("HEAD", "/v2", "", Route(r.BASE, "HEAD")),
        ("GET", "/v2/_catalog", "n=5&last=b", Route(r.CATALOG, "GET", n=5, last="b")),
        ("GET", "/v2/lib/x/blobs/" + D256, "", Route(r.BLOB, "GET", "lib/x", digest=DG)),
        ("HEAD", "/v2/x/blobs/" + D256, "", Route(r.BLOB, "HEAD", "x", digest=DG)),
        (
            "GET",
            "/v2/x/blobs/" + D512,
            "",
            Route(r.BLOB, "GET", "x", digest=Digest.parse(D512)),
        ),
        ("DELETE", "/v2/x/blobs/" + D256, "", Route(r.BLOB_DELETE, "DELETE", "x", digest=DG)),
        ("GET", "/v2/x/manifests/latest", "", Route(r.MANIFEST, "GET", "x", tag="latest")),
        ("HEAD", "/v2/x/manifests/" + D256, "", Route(r.MANIFEST, "HEAD", "x", digest=DG)),
        ("PUT", "/v2/x/manifests/v1.0", "", Route(r.MANIFEST_PUT, "PUT", "x", tag="v1.0")),
        (
            "PUT",
            "/v2/x/manifests/" + D256,
            "tag=a&tag=b",
            Route(r.MANIFEST_PUT, "PUT", "x", digest=DG, tags=("a", "b")),
        ),
        ("DELETE", "/v2/x/manifests/t", "", Route(r.MANIFEST_DELETE, "DELETE", "x", tag="t")),
        ("POST", "/v2/x/blobs/uploads/", "", Route(r.UPLOAD_START, "POST", "x")),
        ("POST", "/v2/x/blobs/uploads", "", Route(r.UPLOAD_START, "POST", "x")),
        (
            "POST",
            "/v2/x/blobs/uploads",
            "digest=" + D256,
            Route(r.UPLOAD_MONOLITHIC, "POST", "x", digest=DG),
        ),
        (
            "POST",
            "/v2/x/blobs/uploads/",
            "digest-algorithm=sha512",
            Route(r.UPLOAD_START, "POST", "x", algorithm="sha512"),
        ),
        (
            "POST",
            "/v2/x/blobs/uploads/",
            "digest=" + D256,
            Route(r.UPLOAD_MONOLITHIC, "POST", "x", digest=DG),
        ),
        (
            "POST",
            "/v2/x/blobs/uploads/",
            f"mount={D256}&from=other/repo",
            Route(r.UPLOAD_MOUNT, "POST", "x", mount=DG, mount_from="other/repo"),
        ),
        (
            "POST",
            "/v2/x/blobs/uploads/",
            f"mount={D256}",
            Route(r.UPLOAD_MOUNT, "POST", "x", mount=DG),
        ),
        ("PATCH", "/v2/x/blobs/uploads/u-1", "", Route(r.UPLOAD_PATCH, "PATCH", "x", uuid="u-1")),
        (
            "PUT",
            "/v2/x/blobs/uploads/u_1",
            "digest=" + D256,
            Route(r.UPLOAD_FINISH, "PUT", "x", uuid="u_1", digest=DG),
        ),
        ("GET", "/v2/x/blobs/uploads/U1", "", Route(r.UPLOAD_STATUS, "GET", "x", uuid="U1")),
        ("DELETE", "/v2/x/blobs/uploads/U1", "", Route(r.UPLOAD_CANCEL, "DELETE", "x", uuid="U1")),
        ("GET", "/v2/a/b/c/tags/list", "", Route(r.TAGS, "GET", "a/b/c")),
        ("GET", "/v2/x/tags/list", "n=0&last=v1", Route(r.TAGS, "GET", "x", n=0, last="v1")),
        ("GET", "/v2/x/referrers/" + D256, "", Route(r.REFERRERS, "GET", "x", digest=DG)),
        (
            "GET",
            "/v2/x/referrers/" + D256,
            "artifactType=application%2Fvnd.example%2Bjson",
            Route(r.REFERRERS, "GET", "x", digest=DG, artifact_type="application/vnd.example+json"),
        ),
        # <name> may hold the marker words; the last marker segment wins.
        (
            "GET",
            "/v2/manifests/blobs/tags/manifests/latest",
            "",
            Route(r.MANIFEST, "GET", "manifests/blobs/tags", tag="latest"),
        ),
        (
            "GET",
            "/v2/a/blobs/b/blobs/" + D256,
            "",
            Route(r.BLOB, "GET", "a/blobs/b", digest=DG),
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/b/blobs/uploads/",
            "",
            Route(r.UPLOAD_START, "POST", "a/blobs/uploads/b"),
        ),
        ("GET", "/v2/a/tags/list/tags/list", "", Route(r.TAGS, "GET", "a/tags/list")),
        (
            "GET",
            "/v2/a.b_c__d--e/f/manifests/t",
            "",
            Route(r.MANIFEST, "GET", "a.b_c__d--e/f", tag="t"),
        ),
    ],
)
def test_match(method: str, path: str, query: str, want: Route) -> None:
    assert match(method, path, query) == want


def test_reference_property() -> None:
    assert match("GET", "/v2/x/manifests/t").reference == "t"
    assert match("GET", "/v2/x/manifests/" + D256).reference == D256
    assert match("GET", "/v2/").reference is None


def _refused(method: str, path: str, query: str = "") -> RegistryError:
    with pytest.raises(RegistryError) as info:
        match(method, path, query)
    return info.value


@pytest.mark.parametrize(
    "name",
    [
        "a//b",
        "UPPER",
        "..",
        "a/../b",
        "./a",
        "a/",
        "/a",
        "-a",
        "a-",
        "a..b",
        "a___b",
        "a b",
        "a%2fb",
        "a/.b",
        "x" * 256,
        "a/" * 127 + "bb",  # 256 characters in valid components
    ],
)
def test_invalid_names(name: str) -> None:
    err = _refused("GET", f"/v2/{name}/manifests/latest")
    assert (err.code, err.status) == ("NAME_INVALID", 400)


def test_name_at_the_length_limit() -> None:
    name = "a/" * 126 + "abc"  # 255 characters
    assert len(name) == 255
    assert match("GET", f"/v2/{name}/tags/list").name == name


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256:" + "g" * 64,
        "sha256:",
        ":" + "a" * 64,
        "sha256:..",
    ],
)
@pytest.mark.parametrize(
    ("method", "template", "query"),
    [
        ("GET", "/v2/x/blobs/{}", ""),
        ("DELETE", "/v2/x/blobs/{}", ""),
        ("GET", "/v2/x/manifests/{}", ""),
        ("PUT", "/v2/x/manifests/{}", ""),
        ("GET", "/v2/x/referrers/{}", ""),
        ("POST", "/v2/x/blobs/uploads/", "digest={}"),
        ("POST", "/v2/x/blobs/uploads/", "mount={}&from=y"),
        ("PUT", "/v2/x/blobs/uploads/u1", "digest={}"),
    ],
)
def test_invalid_digests(digest: str, method: str, template: str, query: str) -> None:
    path = template.format(digest) if "{}" in template else template
    err = _refused(method, path, query.format(digest))
    assert (err.code, err.status) == ("DIGEST_INVALID", 400)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/x/blobs/sha256:../../etc/passwd",
        "/v2/x/manifests/../../blobs",
        "/v2/../x/tags/list",
        "/v2/x/blobs/uploads/../../y",
    ],
)
def test_traversal_is_refused(path: str) -> None:
    assert _refused("GET", path).status in (400, 404)


def test_blob_digest_without_algorithm() -> None:
    assert _refused("GET", "/v2/x/blobs/" + "a" * 64).code == "DIGEST_INVALID"


@pytest.mark.parametrize("tag", ["-a", ".a", "a" * 129, "a+b", "ä"])
def test_invalid_tags(tag: str) -> None:
    err = _refused("PUT", f"/v2/x/manifests/{tag}")
    assert (err.code, err.status) == ("MANIFEST_INVALID", 400)
    # A read or delete of it names nothing: a Route the handler answers 404 for, with
    # no tag that could reach a storage path.
    for method, endpoint in (
        ("GET", r.MANIFEST),
        ("HEAD", r.MANIFEST),
        ("DELETE", r.MANIFEST_DELETE),
    ):
        route = match(method, f"/v2/x/manifests/{tag}")
        assert (route.endpoint, route.tag, route.digest) == (endpoint, None, None)
        assert route.unknown_tag == tag and route.reference == tag


def test_manifest_put_options() -> None:
    route = match("PUT", "/v2/x/manifests/v1", "digest-algorithm=sha512&tag=a&tag=a&tag=b")
    assert (route.algorithm, route.algorithm_given, route.tags) == ("sha512", True, ("a", "b"))
    route = match("PUT", "/v2/x/manifests/" + D256)
    assert (route.algorithm, route.algorithm_given) == ("sha256", False)
    assert _refused("PUT", "/v2/x/manifests/v1", "digest-algorithm=md5").code == "DIGEST_INVALID"


def test_tag_of_128_characters() -> None:
    tag = "_" + "a" * 127
    assert match("PUT", f"/v2/x/manifests/{tag}").tag == tag


def test_invalid_extra_tag_on_put_by_digest() -> None:
    assert _refused("PUT", "/v2/x/manifests/" + D256, "tag=ok&tag=.bad").code == "MANIFEST_INVALID"


@pytest.mark.parametrize("uuid", ["..", "a.b", "a" * 129, "a%2Fb", "a b"])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_invalid_upload_ids(uuid: str, method: str) -> None:
    err = _refused(method, f"/v2/x/blobs/uploads/{uuid}")
    assert (err.code, err.status) == ("BLOB_UPLOAD_UNKNOWN", 404)


def test_upload_finish_needs_a_digest() -> None:
    assert _refused("PUT", "/v2/x/blobs/uploads/u1").code == "DIGEST_INVALID"


def test_unsupported_digest_algorithm_for_upload() -> None:
    err = _refused("POST", "/v2/x/blobs/uploads/", "digest-algorithm=md5")
    assert (err.code, err.status) == ("DIGEST_INVALID", 400)


def test_mount_from_an_invalid_name() -> None:
    assert (
        _refused("POST", "/v2/x/blobs/uploads/", f"mount={D256}&from=A//B").code == "NAME_INVALID"
    )


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v2/", "GET, HEAD"),
        ("PUT", "/v2/x/blobs/" + D256, "DELETE, GET, HEAD"),
        ("POST", "/v2/x/manifests/t", "DELETE, GET, HEAD, PUT"),
        ("GET", "/v2/x/blobs/uploads/", "POST"),
        ("POST", "/v2/x/blobs/uploads/u1", "DELETE, GET, PATCH, PUT"),
        ("DELETE", "/v2/x/tags/list", "GET"),
        ("DELETE", "/v2/x/referrers/" + D256, "GET"),
        ("DELETE", "/v2/_catalog", "GET"),
    ],
)
def test_method_not_allowed(method: str, path: str, allow: str) -> None:
    err = _refused(method, path)
    assert (err.code, err.status, err.headers) == ("UNSUPPORTED", 405, {"Allow": allow})


@pytest.mark.parametrize(
    "path", ["/", "/v1/", "/v2/x", "/v2/x/blobs/", "/v2/x/tags", "/v2/x/manifests/", "/v2x/"]
)
def test_unknown_paths(path: str) -> None:
    err = _refused("GET", path)
    assert (err.code, err.status) == ("UNSUPPORTED", 404)


@pytest.mark.parametrize("n", ["-1", "x", "1.5", "", "1" * 10, "٣"])
def test_bad_page_size(n: str) -> None:
    assert _refused("GET", "/v2/x/tags/list", f"n={n}").status == 400


def test_repeated_query_parameter() -> None:
    assert _refused("GET", "/v2/x/tags/list", "n=1&n=2").status == 400


_ALNUM = st.text(alphabet="abcz0189", min_size=1, max_size=5)
_SEP = st.sampled_from([".", "_", "__", "-", "---"])
_COMPONENT = st.tuples(_ALNUM, st.lists(st.tuples(_SEP, _ALNUM), max_size=3)).map(
    lambda t: t[0] + "".join(sep + alnum for sep, alnum in t[1])
)


@given(st.lists(_COMPONENT, min_size=1, max_size=4), st.sampled_from(["latest", D256]))
def test_valid_names_round_trip(components: list[str], ref: str) -> None:
    name = "/".join(components)
    if len(name) > 255:
        return
    route = match("GET", f"/v2/{name}/manifests/{ref}")
    assert (route.name, route.reference) == (name, ref)


@given(st.text(min_size=1, max_size=40))
def test_any_name_either_matches_safely_or_is_refused(name: str) -> None:
    try:
        route = match("GET", f"/v2/{name}/tags/list")
    except RegistryError as exc:
        assert exc.status in (400, 404)
        return
    assert route.name is not None
    assert ".." not in route.name.split("/") and not route.name.startswith("/")
    assert is_valid_repository(route.name)


_METHOD = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
_PIECE = st.sampled_from(
    [
        "x",
        "a/b",
        "manifests",
        "blobs",
        "uploads",
        "tags",
        "list",
        "referrers",
        "_catalog",
        D256,
        "latest",
        "..",
        "",
        "A",
        "u1",
        "sha256:zz",
    ]
)


@given(_METHOD, st.lists(_PIECE, max_size=6), st.text(max_size=30))
def test_match_only_ever_raises_registry_errors(method: str, pieces: list[str], query: str) -> None:
    try:
        route = match(method, "/v2/" + "/".join(pieces), query)
    except RegistryError as exc:
        assert exc.status in (400, 404, 405)
        return
    if route.name is not None:
        assert is_valid_repository(route.name)
    if route.uuid is not None:
        assert r.UUID_RE.fullmatch(route.uuid)
    if route.tag is not None:
        assert is_valid_tag(route.tag)
