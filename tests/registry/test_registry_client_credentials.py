"""The credentials file (docker config.json / podman auth.json): where it is, what keys
match a registry, what a write keeps; and the transport's scheme choice."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from lamina.errors import InvalidFormat, NotFound
from lamina.registry.challenges import Scope
from lamina.registry.client.authflow import merge_scopes, scope_key
from lamina.registry.client.credentials import (
    Credentials,
    auth_file_path,
    load_credentials,
    normalize_host,
    remove_credentials,
    save_credentials,
)
from lamina.registry.client.transport import is_loopback


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_file_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_file_path() == str(tmp_path / ".docker" / "config.json")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert auth_file_path() == str(tmp_path / "dc" / "config.json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    assert auth_file_path() == str(tmp_path / "auth.json")
    assert auth_file_path(str(tmp_path / "x.json")) == str(tmp_path / "x.json")


def test_keys_match_like_docker(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _b64("hub:pw1")},
                    "http://reg.example:5000/v2/": {"auth": _b64("u:p:with:colons")},
                    "other.example": {"username": "plain", "password": "pw3"},
                    "tok.example": {"identitytoken": "refresh"},
                },
                "credsStore": "desktop",
            }
        )
    )
    assert load_credentials("docker.io", str(path)) == Credentials("hub", "pw1")
    assert load_credentials("reg.example:5000", str(path)) == Credentials("u", "p:with:colons")
    assert load_credentials("other.example", str(path)) == Credentials("plain", "pw3")
    assert load_credentials("tok.example", str(path)) == Credentials("<token>", "refresh")
    assert load_credentials("reg.example", str(path)) is None  # the port is part of the host
    assert load_credentials("absent.example", str(tmp_path / "missing.json")) is None
    assert "pw1" not in repr(load_credentials("docker.io", str(path)))


def test_save_keeps_other_keys_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "d" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {"a.example": {"auth": _b64("x:y")}}, "psFormat": "t"}))
    save_credentials("https://b.example:5000/", Credentials("me", "pw"), str(path))
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "t"
    assert doc["auths"]["a.example"] == {"auth": _b64("x:y")}
    assert doc["auths"]["b.example:5000"] == {"auth": _b64("me:pw")}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_credentials("docker.io", Credentials("hub", "pw"), str(path))
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]
    remove_credentials("b.example:5000", str(path))
    assert "b.example:5000" not in json.loads(path.read_text())["auths"]
    with pytest.raises(NotFound):
        remove_credentials("b.example:5000", str(path))
    new = tmp_path / "new" / "sub" / "auth.json"
    save_credentials("c.example", Credentials("u", "p"), str(new))
    assert stat.S_IMODE(new.parent.stat().st_mode) == 0o700


def test_malformed_files_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InvalidFormat, match="not valid JSON"):
        load_credentials("a.example", str(path))
    path.write_text(json.dumps({"auths": {"a.example": {"auth": "!!!"}}}))
    with pytest.raises(InvalidFormat, match="base64"):
        load_credentials("a.example", str(path))


def test_normalize_host() -> None:
    assert normalize_host("https://index.docker.io/v1/") == "docker.io"
    assert normalize_host("registry-1.docker.io") == "docker.io"
    assert normalize_host("http://localhost:5000/v2/") == "localhost:5000"


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost:5000", True),
        ("localhost", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.example:5000", False),
        ("docker.io", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_registries_are_plain_http(registry: str, loopback: bool) -> None:
    assert is_loopback(registry) is loopback


def test_scopes_merge_per_repository() -> None:
    merged = merge_scopes([Scope("a", ("push",)), Scope("a", ("pull",)), Scope("b", ("pull",))])
    assert [str(s) for s in merged] == ["repository:a:pull,push", "repository:b:pull"]
    assert scope_key([Scope("a", ("pull", "push")), Scope("a", ("pull",))]) == (
        "repository:a:pull,push",
    )


def test_an_unknown_registry_host_fails_clearly(lamina) -> None:  # type: ignore[no-untyped-def]
    import time

    start = time.monotonic()
    out = lamina("pull", "nosuch.invalid/a/b:1", check=False)
    assert out.returncode == 9  # ToolError
    assert "nosuch.invalid" in out.stderr and "hint:" in out.stderr
    assert time.monotonic() - start < 60
