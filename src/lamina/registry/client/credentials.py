"""Registry credentials in Docker's ``config.json`` format (also podman's ``auth.json``).

The file holds ``{"auths": {"<host>": {"auth": base64("user:password")}}}`` beside other
keys (``credsStore``, ``HttpHeaders``, ...), which are kept as they are when lamina
writes. Which file: ``--authfile``; else ``$REGISTRY_AUTH_FILE`` (podman, skopeo);
else ``$DOCKER_CONFIG/config.json``; else ``~/.docker/config.json``.

Keys are matched the way docker does: the host, with or without a scheme and path
(``https://index.docker.io/v1/`` is docker.io's historic key). Writes are atomic
(temp file, fsync, rename) and the file is 0600, its directory 0700 when created.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from lamina.atomic import write_atomic
from lamina.errors import InvalidArgument, InvalidFormat, NotFound
from lamina.oci.reference import DEFAULT_REGISTRY

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_MAX_FILE = 4 << 20


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password (or an identity token as the password)."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(username={self.username!r}, password=***)"


def auth_file_path(explicit: str | None = None) -> str:
    """The credentials file to use (see the module docstring for the order)."""
    if explicit:
        return explicit
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return env
    config_dir = os.environ.get("DOCKER_CONFIG")
    if config_dir:
        return os.path.join(config_dir, "config.json")
    return os.path.join(os.path.expanduser("~"), ".docker", "config.json")


def normalize_host(server: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000``; docker.io's aliases -> docker.io."""
    text = server.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    host = text.split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return DEFAULT_REGISTRY
    if not host:
        raise InvalidArgument(f"no registry host in {server!r}", hint="e.g. localhost:5000")
    return host


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidArgument(
            f"cannot read credentials file {path}: {exc.strerror}",
            hint="check its permissions, or pass another --authfile",
        ) from exc
    if len(raw) > _MAX_FILE:
        raise InvalidFormat(f"credentials file {path} is over 4 MiB")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFormat(
            f"credentials file {path} is not valid JSON: {exc}",
            hint="fix or remove the file, then log in again",
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidFormat(f"credentials file {path} is not a JSON object")
    auths = doc.get("auths")
    if auths is not None and not isinstance(auths, dict):
        raise InvalidFormat(f"credentials file {path}: 'auths' is not an object")
    return doc


def _decode(entry: Any, path: str, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidFormat(
                f"credentials file {path}: the auth of {key!r} is not base64 of user:password",
                hint=f"log in to {key} again",
            ) from exc
        if sep:
            return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        # An OAuth2 refresh token: docker sends it as the password of user <token>.
        return Credentials("<token>", token)
    return None


def _matching_keys(auths: dict[str, Any], host: str) -> list[str]:
    return [k for k in auths if _key_host(k) == host]


def _key_host(key: str) -> str:
    try:
        return normalize_host(key)
    except InvalidArgument:
        return ""


def load_credentials(server: str, path: str | None = None) -> Credentials | None:
    """The saved credentials for ``server`` (a host, or a URL), or None."""
    file = auth_file_path(path)
    auths = _read(file).get("auths") or {}
    host = normalize_host(server)
    # An exact key wins over a URL-shaped one for the same host.
    keys = sorted(_matching_keys(auths, host), key=lambda k: (k != host, k))
    for key in keys:
        creds = _decode(auths[key], file, key)
        if creds is not None:
            return creds
    return None


def _write(path: str, doc: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        write_atomic(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
    except OSError as exc:
        raise InvalidArgument(
            f"cannot write credentials file {path}: {exc.strerror}",
            hint="pass a writable --authfile",
        ) from exc


def save_credentials(server: str, creds: Credentials, path: str | None = None) -> str:
    """Store ``creds`` for ``server``; returns the file written. Other keys are kept."""
    if ":" in creds.username:
        raise InvalidArgument("a user name cannot contain ':'", hint="check the --username")
    file = auth_file_path(path)
    doc = _read(file)
    auths: dict[str, Any] = dict(doc.get("auths") or {})
    host = normalize_host(server)
    for key in _matching_keys(auths, host):
        del auths[key]
    key = DOCKER_HUB_KEY if host == DEFAULT_REGISTRY else host
    raw = f"{creds.username}:{creds.password}".encode()
    auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
    doc["auths"] = auths
    _write(file, doc)
    return file


def remove_credentials(server: str, path: str | None = None) -> str:
    """Forget the credentials for ``server``; NotFound if there were none."""
    file = auth_file_path(path)
    doc = _read(file)
    auths: dict[str, Any] = dict(doc.get("auths") or {})
    host = normalize_host(server)
    keys = _matching_keys(auths, host)
    if not keys:
        raise NotFound(f"not logged in to {host}", hint=f"credentials are read from {file}")
    for key in keys:
        del auths[key]
    doc["auths"] = auths
    _write(file, doc)
    return file
