"""Auth challenges (both ends) and the scopes each route needs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamina.registry.challenges import (
    Challenge,
    Scope,
    allows,
    basic_authorization,
    basic_challenge,
    bearer_challenge,
    parse_authorization,
    parse_challenge,
    parse_challenges,
    parse_scopes,
    required_scope,
    required_scopes,
    unauthorized,
)
from lamina.registry.errors import RegistryError
from lamina.registry.routes import match

D = "sha256:" + "c" * 64


def test_bearer_challenge_format() -> None:
    header = bearer_challenge(
        "https://auth.example/token", "registry.example", (Scope("lib/x", ("pull", "push")),)
    )
    assert header == (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:lib/x:pull,push"'
    )
    assert bearer_challenge("r", "s", error="insufficient_scope").endswith(
        ',error="insufficient_scope"'
    )
    assert basic_challenge('my "reg"') == 'Basic realm="my \\"reg\\"",charset="UTF-8"'


def test_control_characters_are_refused() -> None:
    with pytest.raises(RegistryError):
        basic_challenge("a\r\nSet-Cookie: x")


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/busybox:pull",
                },
            ),
        ),
        ('Basic realm="Registry Realm"', Challenge("basic", {"realm": "Registry Realm"})),
        ("basic REALM=plain", Challenge("basic", {"realm": "plain"})),
        (
            'Bearer realm = "a\\"b" , service=svc',
            Challenge("bearer", {"realm": 'a"b', "service": "svc"}),
        ),
        ('Bearer realm="x,y"', Challenge("bearer", {"realm": "x,y"})),
        ("Negotiate", Challenge("negotiate", {})),
    ],
)
def test_parse_challenge(header: str, want: Challenge) -> None:
    assert parse_challenge(header) == want


def test_several_challenges_in_one_header() -> None:
    got = parse_challenges('Basic realm="a", Bearer realm="b",service="s"')
    assert got == [
        Challenge("basic", {"realm": "a"}),
        Challenge("bearer", {"realm": "b", "service": "s"}),
    ]


@pytest.mark.parametrize("header", ["", "  ", '"quoted"', 'Bearer realm="unterminated', "=x"])
def test_malformed_challenges(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_challenges(header)
    assert info.value.code == "UNAUTHORIZED"


def test_challenge_properties() -> None:
    c = parse_challenge(bearer_challenge("r", "s", (Scope("a", ("pull",)), Scope("b", ("push",)))))
    assert (c.realm, c.service) == ("r", "s")
    assert c.scopes == (Scope("a", ("pull",)), Scope("b", ("push",)))
    assert parse_challenge('Basic realm="x"').scopes == ()


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
        max_size=30,
    )
)
def test_challenge_round_trip(realm: str) -> None:
    c = parse_challenge(bearer_challenge(realm, "svc", (Scope("lib/x", ("pull",)),)))
    assert (c.scheme, c.realm, c.service) == ("bearer", realm, "svc")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("repository:lib/x:pull,push", Scope("lib/x", ("pull", "push"))),
        ("repository:host:5000/x:pull", Scope("host:5000/x", ("pull",))),
        ("registry:catalog:*", Scope("catalog", ("*",), "registry")),
        ("repository:x:delete", Scope("x", ("delete",))),
    ],
)
def test_scope_parse_and_format(text: str, want: Scope) -> None:
    assert Scope.parse(text) == want
    assert str(want) == text


@pytest.mark.parametrize(
    "text",
    [
        "repository",
        "repository:x",
        ":x:pull",
        "repository::pull",
        "repository:x:",
        "repository:x:PULL",
        "repository:x:pull;rm",
    ],
)
def test_malformed_scopes(text: str) -> None:
    with pytest.raises(RegistryError):
        Scope.parse(text)


def test_parse_scopes() -> None:
    assert parse_scopes("repository:a:pull  repository:b:push") == (
        Scope("a", ("pull",)),
        Scope("b", ("push",)),
    )


PP = ("pull", "push")


@pytest.mark.parametrize(
    ("method", "path", "query", "want"),
    [
        ("GET", "/v2/", "", ()),
        ("GET", "/v2/_catalog", "", (Scope("catalog", ("*",), "registry"),)),
        ("GET", "/v2/x/manifests/t", "", (Scope("x", ("pull",)),)),
        ("HEAD", f"/v2/x/blobs/{D}", "", (Scope("x", ("pull",)),)),
        ("GET", "/v2/x/tags/list", "", (Scope("x", ("pull",)),)),
        ("GET", f"/v2/x/referrers/{D}", "", (Scope("x", ("pull",)),)),
        ("PUT", "/v2/x/manifests/t", "", (Scope("x", PP),)),
        ("POST", "/v2/x/blobs/uploads/", "", (Scope("x", PP),)),
        ("POST", "/v2/x/blobs/uploads/", f"digest={D}", (Scope("x", PP),)),
        ("PATCH", "/v2/x/blobs/uploads/u", "", (Scope("x", PP),)),
        ("PUT", "/v2/x/blobs/uploads/u", f"digest={D}", (Scope("x", PP),)),
        ("GET", "/v2/x/blobs/uploads/u", "", (Scope("x", PP),)),
        ("DELETE", "/v2/x/blobs/uploads/u", "", (Scope("x", PP),)),
        ("DELETE", "/v2/x/manifests/t", "", (Scope("x", ("delete",)),)),
        ("DELETE", f"/v2/x/blobs/{D}", "", (Scope("x", ("delete",)),)),
        (
            "POST",
            "/v2/x/blobs/uploads/",
            f"mount={D}&from=y/z",
            (Scope("x", PP), Scope("y/z", ("pull",))),
        ),
        ("POST", "/v2/x/blobs/uploads/", f"mount={D}", (Scope("x", PP),)),
    ],
)
def test_required_scopes(method: str, path: str, query: str, want: tuple[Scope, ...]) -> None:
    route = match(method, path, query)
    assert required_scopes(route) == want
    own = [s for s in want if s.type == "repository" and s.name == route.name]
    assert required_scope(route) == ((own[0].name, own[0].actions) if own else None)


def test_allows() -> None:
    pull_a = [Scope("a", ("pull",))]
    assert allows(pull_a, [Scope("a", ("pull",))])
    assert not allows(pull_a, [Scope("a", ("pull", "push"))])
    assert not allows(pull_a, [Scope("b", ("pull",))])
    assert not allows(pull_a, [Scope("a", ("pull",), "registry")])
    assert allows([Scope("a", ("pull",)), Scope("a", ("push",))], [Scope("a", ("pull", "push"))])
    assert allows([Scope("catalog", ("*",), "registry")], [Scope("catalog", ("*",), "registry")])
    assert allows([Scope("a", ("*",))], [Scope("a", ("delete",))])
    assert allows([], [])
    route = match("POST", "/v2/a/blobs/uploads/", f"mount={D}&from=b")
    assert not allows([Scope("a", ("pull", "push"))], required_scopes(route))
    assert allows([Scope("a", ("pull", "push")), Scope("b", ("pull",))], required_scopes(route))


def test_unauthorized_carries_the_challenge() -> None:
    err = unauthorized(basic_challenge("r"))
    assert (err.code, err.status) == ("UNAUTHORIZED", 401)
    assert err.headers == {"WWW-Authenticate": 'Basic realm="r",charset="UTF-8"'}


def test_basic_authorization_round_trip() -> None:
    header = basic_authorization("alice", "p:ä ss")
    assert header == "Basic " + base64.b64encode("alice:p:ä ss".encode()).decode()
    assert parse_authorization(header) == ("basic", "alice", "p:ä ss")
    assert parse_authorization("bearer abc.def.ghi") == ("bearer", "abc.def.ghi", "")
    assert parse_authorization(None) is None
    with pytest.raises(RegistryError):
        basic_authorization("a:b", "c")


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"\xff:x").decode(),
        # found by fuzz/targets/challenges.py: non-ASCII text made b64decode raise a
        # bare ValueError (a 500 and a traceback instead of a 401)
        "Basic dXNlcjpw\xe4c3M=",
        "Bearer",
        "Bearer a b",
        "Digest x",
        "",
    ],
)
def test_malformed_authorization(header: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_authorization(header)
    assert (info.value.code, info.value.status) == ("UNAUTHORIZED", 401)
