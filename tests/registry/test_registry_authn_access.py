"""The Authenticators, the token issuer and the ACL policy, without sockets: real
bcrypt hashes (cost 4), real JWTs, scopes computed from real routes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import InvalidArgument, InvalidFormat, NotFound
from lamina.registry.authn import (
    DEFAULT_POLICY,
    BasicAuthenticator,
    BuiltinTokenIssuer,
    Identity,
    TokenAuthenticator,
    open_authenticator,
    write_htpasswd,
)
from lamina.registry.authn.policy import Policy, Rule, load_policy, policy_from_json
from lamina.registry.authn.tokens import TokenCodec
from lamina.registry.challenges import (
    Scope,
    basic_authorization,
    parse_challenge,
    required_scopes,
)
from lamina.registry.errors import RegistryError
from lamina.registry.routes import match

REALM = "http://127.0.0.1:5000/token"
SERVICE = "registry.test"
D = "sha256:" + "a" * 64
ALICE = basic_authorization("alice", "wonderland")
BOB = basic_authorization("bob", "builder")


def needed(method: str, path: str, query: str = "") -> tuple[Scope, ...]:
    return required_scopes(match(method, path, query))


PULL_A = needed("GET", f"/v2/a/manifests/{D}")
PUSH_A = needed("PUT", "/v2/a/manifests/latest")
PULL_B = needed("GET", "/v2/b/blobs/" + D)
DELETE_A = needed("DELETE", f"/v2/a/manifests/{D}")
BASE = needed("GET", "/v2/")
MOUNT_A_FROM_B = needed("POST", "/v2/a/blobs/uploads/", f"mount={D}&from=b")


@pytest.fixture
def htpasswd(tmp_path: Path) -> str:
    path = str(tmp_path / "htpasswd")
    write_htpasswd(path, {"alice": "wonderland", "bob": "builder"}, cost=4)
    return path


def _refusal(call: object, *args: object) -> RegistryError:
    assert callable(call)
    with pytest.raises(RegistryError) as info:
        call(*args)
    return info.value


def _challenge(err: RegistryError) -> str:
    assert err.status == 401 and err.code == "UNAUTHORIZED", err
    return err.headers["WWW-Authenticate"]


# -- open_authenticator ---------------------------------------------------------------


def test_factory_choices(tmp_path: Path, htpasswd: str) -> None:
    common: dict[str, Any] = {"realm": REALM, "service": SERVICE}
    assert open_authenticator(htpasswd=None, token_key=None, **common) is None
    with pytest.raises(InvalidArgument):
        open_authenticator(htpasswd=None, token_key=None, anonymous_pull=True, **common)
    basic = open_authenticator(htpasswd=htpasswd, token_key=None, **common)
    assert isinstance(basic, BasicAuthenticator) and basic.issuer is None
    key = tmp_path / "sub" / "token.pem"
    key.parent.mkdir()
    token = open_authenticator(htpasswd=htpasswd, token_key=str(key), **common)
    assert isinstance(token, TokenAuthenticator)
    assert token.issuer is not None and token.issuer.path == "/token"
    assert key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidArgument, match="no users"):
        open_authenticator(htpasswd=None, token_key=str(key), **common)
    anon_only = open_authenticator(htpasswd=None, token_key=str(key), anonymous_pull=True, **common)
    assert isinstance(anon_only, TokenAuthenticator)
    with pytest.raises(InvalidArgument, match="absolute URL"):
        open_authenticator(htpasswd=htpasswd, token_key=str(key), realm="/token", service=SERVICE)
    with pytest.raises(NotFound):
        open_authenticator(htpasswd=str(tmp_path / "absent"), token_key=None, **common)
    with pytest.raises(InvalidArgument, match="realm"):
        open_authenticator(htpasswd=htpasswd, token_key=None, realm="a\r\nb", service=SERVICE)


# -- Basic ----------------------------------------------------------------------------


@pytest.fixture
def basic(htpasswd: str) -> BasicAuthenticator:
    auth = open_authenticator(htpasswd=htpasswd, token_key=None, realm="lamina", service=SERVICE)
    assert isinstance(auth, BasicAuthenticator)
    return auth


def test_basic_accepts_the_right_password(basic: BasicAuthenticator) -> None:
    for need in (BASE, PULL_A, PUSH_A, DELETE_A, MOUNT_A_FROM_B):
        ident = basic.authenticate(ALICE, need)
        assert ident.user == "alice" and ident.granted == need
    assert basic.authenticate(BOB, PUSH_A) == Identity("bob", PUSH_A)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic_authorization("alice", "wrong"),
        basic_authorization("alice", ""),
        basic_authorization("mallory", "wonderland"),
        basic_authorization("", "wonderland"),
        "Bearer sometoken",
        "Basic",
        "Basic !!!!",
        "Basic " + "YWxpY2U=",  # "alice", no colon
        "Basic /w==",  # not UTF-8
        "Digest username=alice",
        "",
        "   ",
        "Basic " + "A" * 10000,
    ],
)
def test_basic_refusals_carry_the_challenge(
    basic: BasicAuthenticator, authorization: str | None
) -> None:
    for need in (BASE, PULL_A, PUSH_A):
        err = _refusal(basic.authenticate, authorization, need)
        assert _challenge(err) == 'Basic realm="lamina",charset="UTF-8"'


def test_basic_anonymous_pull(htpasswd: str) -> None:
    auth = open_authenticator(
        htpasswd=htpasswd, token_key=None, realm="r", service=SERVICE, anonymous_pull=True
    )
    assert auth is not None
    assert auth.authenticate(None, BASE) == Identity(None, ())
    assert auth.authenticate(None, PULL_A) == Identity(None, PULL_A)
    # Anonymous push is refused with a challenge, so the client retries with credentials.
    for need in (PUSH_A, DELETE_A, MOUNT_A_FROM_B, needed("GET", "/v2/_catalog")):
        assert _challenge(_refusal(auth.authenticate, None, need)).startswith("Basic ")
    assert auth.authenticate(ALICE, PUSH_A).user == "alice"
    # A wrong password is still wrong, even where anonymous would have passed.
    _challenge(_refusal(auth.authenticate, basic_authorization("alice", "x"), PULL_A))


def test_basic_acl_denies_with_403(htpasswd: str, tmp_path: Path) -> None:
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({"users": {"alice": {"a": ["pull"]}, "bob": {"*": ["*"]}}}))
    auth = open_authenticator(
        htpasswd=htpasswd, token_key=None, realm="r", service=SERVICE, acl=str(acl)
    )
    assert auth is not None
    assert auth.authenticate(ALICE, PULL_A).user == "alice"
    assert auth.authenticate(ALICE, BASE).user == "alice"
    for need in (PUSH_A, PULL_B, DELETE_A):
        err = _refusal(auth.authenticate, ALICE, need)
        assert err.status == 403 and err.code == "DENIED"
    assert auth.authenticate(BOB, MOUNT_A_FROM_B).user == "bob"


# -- tokens ---------------------------------------------------------------------------


@pytest.fixture
def tokens(htpasswd: str, tmp_path: Path) -> TokenAuthenticator:
    auth = open_authenticator(
        htpasswd=htpasswd, token_key=str(tmp_path / "k.pem"), realm=REALM, service=SERVICE
    )
    assert isinstance(auth, TokenAuthenticator)
    return auth


def _token(auth: TokenAuthenticator, authorization: str | None, *scopes: str) -> str:
    assert auth.issuer is not None
    body = auth.issuer.issue(authorization, SERVICE, scopes)
    assert body["token"] == body["access_token"]
    return "Bearer " + str(body["token"])


def test_no_token_gets_the_exact_challenge(tokens: TokenAuthenticator) -> None:
    assert _challenge(_refusal(tokens.authenticate, None, BASE)) == (
        f'Bearer realm="{REALM}",service="{SERVICE}"'
    )
    assert _challenge(_refusal(tokens.authenticate, None, PUSH_A)) == (
        f'Bearer realm="{REALM}",service="{SERVICE}",scope="repository:a:pull,push"'
    )
    mount = parse_challenge(_challenge(_refusal(tokens.authenticate, ALICE, MOUNT_A_FROM_B)))
    assert mount.scheme == "bearer" and "error" not in mount.params
    assert mount.scopes == (Scope("a", ("pull", "push")), Scope("b", ("pull",)))


def test_issue_response_body(tokens: TokenAuthenticator) -> None:
    assert tokens.issuer is not None
    body = tokens.issuer.issue(ALICE, SERVICE, ("repository:a:pull",))
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    # service may be omitted (some clients do); the issuer's own service is meant.
    assert tokens.issuer.issue(ALICE, None, ())["token"]


def test_pull_token_for_a_cannot_push_a_or_pull_b(tokens: TokenAuthenticator) -> None:
    token = _token(tokens, ALICE, "repository:a:pull")
    assert tokens.authenticate(token, PULL_A) == Identity("alice", PULL_A)
    assert tokens.authenticate(token, BASE).user == "alice"
    for need, scope in ((PUSH_A, "repository:a:pull,push"), (PULL_B, "repository:b:pull")):
        header = _challenge(_refusal(tokens.authenticate, token, need))
        assert header == (
            f'Bearer realm="{REALM}",service="{SERVICE}",scope="{scope}",error="insufficient_scope"'
        )
    _challenge(_refusal(tokens.authenticate, token, DELETE_A))
    # The client then asks for exactly what the challenge named, and succeeds.
    better = _token(tokens, ALICE, "repository:a:pull,push")
    assert tokens.authenticate(better, PUSH_A).user == "alice"
    _challenge(_refusal(tokens.authenticate, better, MOUNT_A_FROM_B))
    mount = _token(tokens, ALICE, "repository:a:pull,push", "repository:b:pull")
    assert tokens.authenticate(mount, MOUNT_A_FROM_B).user == "alice"


def test_scopes_for_one_repository_are_merged(tokens: TokenAuthenticator) -> None:
    token = _token(tokens, ALICE, "repository:a:pull repository:a:push", "repository:a:pull")
    ident = tokens.authenticate(token, PUSH_A)
    assert ident.granted == (Scope("a", ("pull", "push")),)


def test_issuer_refuses_bad_credentials(tokens: TokenAuthenticator) -> None:
    issuer = tokens.issuer
    assert issuer is not None
    for creds in (
        basic_authorization("alice", "wrong"),
        basic_authorization("mallory", "x"),
        None,  # anonymous pull is off
        "Bearer x",
        "Basic ???",
    ):
        err = _refusal(issuer.issue, creds, SERVICE, ("repository:a:pull",))
        assert _challenge(err) == f'Basic realm="{REALM}",charset="UTF-8"'


def test_issuer_refuses_bad_requests(tokens: TokenAuthenticator) -> None:
    issuer = tokens.issuer
    assert issuer is not None
    err = _refusal(issuer.issue, ALICE, "other.service", ("repository:a:pull",))
    assert err.code == "DENIED"
    assert _refusal(issuer.issue, ALICE, SERVICE, ("repository:a",)).status == 400
    assert _refusal(issuer.issue, ALICE, SERVICE, ("nonsense",)).status == 400
    many = tuple(f"repository:r{i}:pull" for i in range(33))
    assert _refusal(issuer.issue, ALICE, SERVICE, many).status == 400


def test_anonymous_tokens_pull_only(htpasswd: str, tmp_path: Path) -> None:
    auth = open_authenticator(
        htpasswd=htpasswd,
        token_key=str(tmp_path / "k.pem"),
        realm=REALM,
        service=SERVICE,
        anonymous_pull=True,
    )
    assert isinstance(auth, TokenAuthenticator)
    token = _token(auth, None, "repository:a:pull,push,delete", "repository:b:pull")
    ident = auth.authenticate(token, PULL_A)
    assert ident == Identity(None, (Scope("a", ("pull",)), Scope("b", ("pull",))))
    assert auth.authenticate(token, PULL_B).user is None
    # Anonymous push: refused even holding a token, with the challenge to log in.
    err = _refusal(auth.authenticate, token, PUSH_A)
    assert 'error="insufficient_scope"' in _challenge(err)
    _challenge(_refusal(auth.authenticate, None, PULL_A))  # a token is still needed


def test_acl_limits_what_the_issuer_grants(htpasswd: str, tmp_path: Path) -> None:
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps({"users": {"alice": {"team/*": ["pull", "push"], "a": ["pull"]}}}))
    auth = open_authenticator(
        htpasswd=htpasswd,
        token_key=str(tmp_path / "k.pem"),
        realm=REALM,
        service=SERVICE,
        acl=str(acl),
    )
    assert isinstance(auth, TokenAuthenticator)
    token = _token(
        auth,
        ALICE,
        "repository:team/x:pull,push,delete",
        "repository:a:pull,push",
        "repository:b:pull",
    )
    ident = auth.authenticate(token, needed("GET", "/v2/team/x/tags/list"))
    assert ident.granted == (Scope("team/x", ("pull", "push")), Scope("a", ("pull",)))
    assert auth.authenticate(token, needed("PUT", "/v2/team/x/manifests/t")).user == "alice"
    for need in (PUSH_A, PULL_B, needed("DELETE", f"/v2/team/x/manifests/{D}")):
        _challenge(_refusal(auth.authenticate, token, need))
    # bob is in the htpasswd file but not in the ACL: a token, with nothing in it.
    empty = _token(auth, BOB, "repository:a:pull")
    assert auth.authenticate(empty, BASE) == Identity("bob", ())
    _challenge(_refusal(auth.authenticate, empty, PULL_A))


def test_invalid_tokens_are_invalid_token(tokens: TokenAuthenticator, tmp_path: Path) -> None:
    assert tokens.issuer is not None
    codec = tokens.token_issuer.codec
    expired, _, _ = codec.sign("alice", PULL_A, now=time.time() - 3600)
    stranger = open_authenticator(
        htpasswd=tokens.token_issuer.users.path if tokens.token_issuer.users else None,
        token_key=str(tmp_path / "other.pem"),
        realm=REALM,
        service=SERVICE,
    )
    assert isinstance(stranger, TokenAuthenticator)
    foreign = _token(stranger, ALICE, "repository:a:pull")
    other_service = TokenCodec(codec.key, codec.issuer, "elsewhere").sign("alice", PULL_A)[0]
    for token in ("Bearer " + expired, foreign, "Bearer " + other_service, "Bearer a.b.c"):
        header = _challenge(_refusal(tokens.authenticate, token, PULL_A))
        assert header.endswith(',error="invalid_token"'), header
        assert 'scope="repository:a:pull"' in header
    # Basic credentials are not a token: a plain challenge, no error parameter.
    header = _challenge(_refusal(tokens.authenticate, ALICE, PULL_A))
    assert "error=" not in header and header.startswith("Bearer ")


def test_catalog_scope(tokens: TokenAuthenticator) -> None:
    catalog = needed("GET", "/v2/_catalog")
    assert catalog == (Scope("catalog", ("*",), "registry"),)
    token = _token(tokens, ALICE, "registry:catalog:*")
    assert tokens.authenticate(token, catalog).user == "alice"
    no = _token(tokens, ALICE, "repository:a:pull")
    assert 'scope="registry:catalog:*"' in _challenge(_refusal(tokens.authenticate, no, catalog))


# -- policy ---------------------------------------------------------------------------


def test_default_policy() -> None:
    req = (Scope("x/y", ("pull", "push", "delete")), Scope("catalog", ("*",), "registry"))
    assert DEFAULT_POLICY.grant("anyone", req) == req
    assert DEFAULT_POLICY.grant(None, req) == ()
    assert DEFAULT_POLICY.with_anonymous_pull().grant(None, req) == (Scope("x/y", ("pull",)),)
    # Names that are not repository names are never granted, whatever the rules say.
    assert DEFAULT_POLICY.grant("anyone", (Scope("../etc", ("pull",)),)) == ()
    assert DEFAULT_POLICY.grant("anyone", (Scope("x", ("pull",), "weird"),)) == ()


def test_policy_rules_add_up() -> None:
    policy = Policy(
        (
            Rule("*", "pub/*", frozenset({"pull"})),
            Rule("alice", "pub/*", frozenset({"push"})),
            Rule("alice", "priv", frozenset({"*"})),
        ),
        anonymous=("pub/*",),
    )
    want = (Scope("pub/x", ("pull", "push", "delete")),)
    assert policy.grant("alice", want) == (Scope("pub/x", ("pull", "push")),)
    assert policy.grant("bob", want) == (Scope("pub/x", ("pull",)),)
    assert policy.grant(None, want) == (Scope("pub/x", ("pull",)),)
    assert policy.grant(None, (Scope("priv", ("pull",)),)) == ()
    star = (Scope("priv", ("*",)),)
    assert policy.grant("alice", star) == star
    assert policy.grant("bob", (Scope("pub/x", ("*",)),)) == ()  # '*' only from '*'
    assert policy.with_anonymous_pull() is policy  # it already names its globs


def test_policy_json(tmp_path: Path) -> None:
    good = {"users": {"alice": {"a/*": ["pull"], "registry:catalog": ["*"]}}, "anonymous": ["p"]}
    policy = policy_from_json(good)
    assert policy.anonymous == ("p",)
    assert policy.grant("alice", (Scope("catalog", ("*",), "registry"),))
    bad: object
    for bad in (
        [],
        {"user": {}},
        {"users": []},
        {"users": {"a": ["pull"]}},
        {"users": {"a": {"x": "pull"}}},
        {"users": {"a": {"x": ["fly"]}}},
        {"anonymous": "p"},
    ):
        with pytest.raises(InvalidFormat):
            policy_from_json(bad)
    path = tmp_path / "acl.json"
    path.write_text("{nope")
    with pytest.raises(InvalidFormat):
        load_policy(str(path))
    with pytest.raises(NotFound):
        load_policy(str(tmp_path / "absent.json"))


def test_a_remembered_token_still_expires(tokens: TokenAuthenticator) -> None:
    # Signatures are checked once per token; expiry on every use.
    issuer = tokens.token_issuer
    short = TokenCodec(issuer.codec.key, issuer.codec.issuer, SERVICE, ttl=2, leeway=0)
    auth = TokenAuthenticator(BuiltinTokenIssuer(short, issuer.users, issuer.policy, realm=REALM))
    token, issued, ttl = short.sign("alice", PULL_A)
    for _ in range(3):
        assert auth.authenticate("Bearer " + token, PULL_A).user == "alice"
    time.sleep(max(0.0, issued + ttl - time.time()) + 0.2)
    header = _challenge(_refusal(auth.authenticate, "Bearer " + token, PULL_A))
    assert header.endswith('error="invalid_token"')
