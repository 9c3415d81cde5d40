"""Which upstream registry a mirror request is for (pure).

containerd names the registry a request is really for in ``?ns=<host>`` (its
``hosts.toml`` mirrors); skopeo, podman and ``lamina pull --mirror`` without it mean
the peer's ``--upstream``. An ``ns`` is honoured only when it names one of the
configured upstreams: a mirror that fetched from any host a client names would be an
open proxy (and a server-side request forgery tool).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from lamina.errors import InvalidArgument

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_upstream(value: str) -> str:
    """``URL`` or bare ``HOST[:PORT]`` -> ``scheme://host[:port]`` (plain http only for
    loopback hosts given bare, as lamina's registry client does)."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        if not value:
            raise InvalidArgument("an empty upstream", hint="give --upstream URL")
        host = DOCKER_HUB_API if value == DOCKER_HUB else value
        value = f"{'http' if _is_loopback(host) else 'https'}://{host}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(
            f"upstream {value!r} is not an http(s) URL",
            hint="give it as https://registry.example.com or http://127.0.0.1:5000",
        )
    if parts.path not in ("", "/"):
        raise InvalidArgument(
            f"upstream {value!r} has a path", hint="give the registry's origin only"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def host_of(upstream: str) -> str:
    return urlsplit(upstream).netloc


@dataclass(frozen=True)
class Upstreams:
    default: str
    """Base URL (``scheme://host[:port]``) of requests without ``ns``."""
    others: tuple[str, ...] = ()

    @classmethod
    def of(cls, default: str, others: Iterable[str] = ()) -> Upstreams:
        return cls(normalize_upstream(default), tuple(normalize_upstream(o) for o in others))

    def all(self) -> tuple[str, ...]:
        return (self.default, *self.others)

    def select(self, ns: str | None) -> str | None:
        """The upstream for ``?ns=`` (``None``: the default); ``None`` if ``ns`` names
        none of them."""
        if not ns:
            return self.default
        wanted = ns.strip().lower()
        if wanted == DOCKER_HUB:
            wanted = DOCKER_HUB_API
        for upstream in self.all():
            if host_of(upstream) == wanted:
                return upstream
        return None
