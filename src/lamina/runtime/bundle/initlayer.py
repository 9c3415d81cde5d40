"""The init layer: ``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/hostname``.

As Docker does, these files are made per container by the runner, not taken from the
image: they are written into the container's directory and bind-mounted over the
paths in the root, so they never land in the container's upper dir, and so never in
``lamina diff`` or ``lamina commit``. :func:`make_placeholders` makes the empty files
and directories the mounts land on, in a snapshot of their own below the container's
writable one, so that the runtime never has to create a mount point in the upper dir
(or could not, on a ``--read-only`` root).

The content functions are pure; :func:`write_init_files` does the I/O.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lamina.errors import InvalidArgument, LaminaError

HOST_HOSTS = "/etc/hosts"
HOST_RESOLV_CONF = "/etc/resolv.conf"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
_MAX_HOST_FILE = 1 << 20

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)

# (path in the root, kind): what the init snapshot holds. Kernel filesystems and the
# init files are mounted on these; etc/mtab is the symlink Docker adds for old tools.
PLACEHOLDERS = (
    ("dev", "dir"),
    ("dev/pts", "dir"),
    ("dev/shm", "dir"),
    ("dev/mqueue", "dir"),
    ("proc", "dir"),
    ("sys", "dir"),
    ("etc", "dir"),
    ("etc/hosts", "file"),
    ("etc/resolv.conf", "file"),
    ("etc/hostname", "file"),
    ("etc/mtab", "link:/proc/mounts"),
)


def hosts_content(
    hostname: str,
    network: str,
    host_hosts: str | None = None,
    *,
    address: str | None = None,
    add_hosts: Sequence[str] = (),
) -> str:
    """``/etc/hosts``: the host's with ``--network host``, else localhost lines; a line
    for the container's own name (its ``address`` on a bridge network, else 127.0.1.1
    when no line names it yet); then the ``--add-host NAME:IP`` lines."""
    if network == "host" and host_hosts is not None:
        text = host_hosts if host_hosts.endswith("\n") or not host_hosts else host_hosts + "\n"
    else:
        text = _LOCALHOST
    extra = "".join(f"{ip}\t{name}\n" for name, _, ip in (h.partition(":") for h in add_hosts))
    if address is not None:
        return text + f"{address}\t{hostname}\n" + extra
    for line in text.splitlines():
        names = line.split("#", 1)[0].split()[1:]
        if hostname in names:
            return text + extra
    return text + f"127.0.1.1\t{hostname}\n" + extra


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def filter_resolv_conf(text: str) -> str:
    """A host's resolv.conf for a container with its own network namespace: loopback
    nameservers (a local systemd-resolved or dnsmasq) cannot be reached from there, so
    they are dropped; with none left, Google's public servers are added (as Docker)."""
    out: list[str] = []
    servers = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            if _is_loopback(fields[1]):
                continue
            servers += 1
        out.append(line)
    if servers == 0:
        out.extend(f"nameserver {ip}" for ip in FALLBACK_NAMESERVERS)
    return "\n".join(out) + "\n"


def _override(text: str, nameservers: Sequence[str], search: Sequence[str]) -> str:
    """``text`` with its nameserver lines replaced by ``nameservers`` and its search
    domains by ``search`` (each only when given)."""
    out = []
    for line in text.splitlines():
        word = line.split()[:1]
        if (nameservers and word == ["nameserver"]) or (
            search and word in (["search"], ["domain"])
        ):
            continue
        out.append(line)
    if search:
        out.append("search " + " ".join(search))
    out.extend(f"nameserver {ip}" for ip in nameservers)
    return "\n".join(out) + "\n"


def resolv_conf_content(
    network: str,
    host_resolv_conf: str | None,
    *,
    nameservers: Sequence[str] = (),
    search: Sequence[str] = (),
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
) -> str:
    """``/etc/resolv.conf``: the host's as is with ``--network host``; with ``none``
    there is no one to ask, so only the search domains are kept; on a bridge network
    the network's DNS server (``nameservers``: aardvark-dns on a user network, with its
    ``search`` domain) or else the host's reachable ones. ``--dns`` and
    ``--dns-search`` replace the nameservers and search domains in every case."""
    if network == "host":
        text = host_resolv_conf or ""
    elif network == "none":
        keep = [
            line
            for line in (host_resolv_conf or "").splitlines()
            if line.split()[:1] in (["search"], ["domain"], ["options"])
        ]
        text = "\n".join(["# --network none: no nameserver", *keep]) + "\n"
    elif nameservers:
        host_search = [
            word
            for line in (host_resolv_conf or "").splitlines()
            if line.split()[:1] == ["search"]
            for word in line.split()[1:]
        ]
        text = _override("", nameservers, [*search, *host_search])
    else:
        text = filter_resolv_conf(host_resolv_conf or "")
    if dns or dns_search:
        text = _override(text, dns, dns_search)
    return text


def hostname_content(hostname: str) -> str:
    return hostname + "\n"


def _read_host_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_HOST_FILE).decode("utf-8", "replace")
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise LaminaError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_init_files(
    container_dir: str,
    hostname: str,
    network: str,
    *,
    host_hosts: str = HOST_HOSTS,
    host_resolv_conf: str = HOST_RESOLV_CONF,
    attachment: Mapping[str, Any] | None = None,
    add_hosts: Sequence[str] = (),
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
) -> dict[str, str]:
    """Write hosts, resolv.conf and hostname into ``container_dir``.

    ``attachment`` is the container's record from :mod:`lamina.network` (its
    ``ip``, ``dns_servers``, ``search_domains``) when it is on a bridge network.
    Returns the ``init_files`` mapping of :func:`lamina.runtime.bundle.spec.build_spec`
    (container path -> file written here).
    """
    att = attachment or {}
    contents = {
        "hosts": hosts_content(
            hostname,
            network,
            _read_host_file(host_hosts),
            address=att.get("ip"),
            add_hosts=add_hosts,
        ),
        "resolv.conf": resolv_conf_content(
            network,
            _read_host_file(host_resolv_conf),
            nameservers=att.get("dns_servers") or (),
            search=att.get("search_domains") or (),
            dns=dns,
            dns_search=dns_search,
        ),
        "hostname": hostname_content(hostname),
    }
    out: dict[str, str] = {}
    for name, text in contents.items():
        path = os.path.join(container_dir, name)
        _write(path, text)
        out["/etc/" + name] = path
    return out


def make_placeholders(directory: str, entries: Mapping[str, str] | None = None) -> None:
    """Fill the fresh directory of the init snapshot with :data:`PLACEHOLDERS`.

    ``directory`` is lamina's own (an empty snapshot just prepared), so plain path
    calls are safe here: nothing in it came from an image. Idempotent.
    """
    items = dict(entries) if entries is not None else dict(PLACEHOLDERS)
    try:
        for rel, kind in items.items():
            path = os.path.join(directory, rel)
            if kind == "dir":
                os.makedirs(path, mode=0o755, exist_ok=True)
            elif kind == "file":
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                os.close(fd)
            elif kind.startswith("link:"):
                if not os.path.lexists(path):
                    os.symlink(kind[5:], path)
            else:
                raise InvalidArgument(f"unknown placeholder kind {kind!r} for {rel!r}")
    except OSError as exc:
        raise LaminaError(
            f"cannot make the init layer in {directory}: {exc.strerror or exc}"
        ) from exc
