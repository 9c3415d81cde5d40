"""A container on a network: its namespace, its address lease, its published ports.

One record per container, ``networks/attachments/<id>.json``, *is* the lease: the
addresses in use on a network are those of its records, read under the networks lock.
The record is written before anything is made on the host (namespace, veth, firewall
rules), so that whatever a crash leaves behind has a record naming it, and it is
deleted only after netavark tore it all down. :func:`sweep` tears down the records of
containers that no longer run (a ``lamina`` killed with -9 never got to it); the
runtime calls it at the start of the next ``run`` and in ``rm``.

Lifecycle: :func:`attach` (lease, namespace, ``netavark setup``) -> the container
runs in :func:`netns <lamina.stateroot.netns_path>` -> :func:`detach` (``netavark
teardown``, namespace unmounted, record deleted). ``detach`` is idempotent.
Light imports only: the fast path of ``lamina run`` attaches and detaches.
"""

from __future__ import annotations

import os

from lamina.lightstd import dumps, loads, suppress
from lamina.network import config as netconfig
from lamina.network import netavark, netns
from lamina.stateroot import attachments_dir, netns_path
from lamina.sysinfo import start_time

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

_MAX_RECORD = 1 << 20


def record_path(root: str, container_id: str) -> str:
    return os.path.join(attachments_dir(root), container_id + ".json")


def read(root: str, container_id: str) -> dict[str, Any] | None:
    """The attachment of a container, or None when it has none (host, none, detached)."""
    try:
        with open(record_path(root, container_id), "rb") as fh:
            doc = loads(fh.read(_MAX_RECORD))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def list_records(root: str) -> list[dict[str, Any]]:
    try:
        entries = sorted(os.listdir(attachments_dir(root)))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.endswith(".json"):
            doc = read(root, entry[: -len(".json")])
            if doc is not None:
                out.append(doc)
    return out


def _lease(root: str, net: dict[str, Any]) -> tuple[str, int, str]:
    """A free address on ``net`` (the caller holds the lock): (ip, prefix, gateway)."""
    subnet = net["subnets"][0]
    base, bits = netconfig.parse_subnet(subnet["subnet"])
    gateway = subnet.get("gateway") or netconfig.int_to_ip(base + 1)
    used = {netconfig.ip_to_int(gateway)}
    for doc in list_records(root):
        if doc.get("network") == net["name"] and isinstance(doc.get("ip"), str):
            used.add(netconfig.ip_to_int(doc["ip"]))
    for value in range(base + 1, base + (1 << (32 - bits)) - 1):  # no network, no broadcast
        if value not in used:
            return netconfig.int_to_ip(value), bits, gateway
    from lamina.errors import LimitExceeded

    raise LimitExceeded(
        f"network {net['name']!r} has no free address left in {subnet['subnet']}",
        hint="remove stopped containers, or use a network with a larger subnet",
    )


def attach(
    root: str,
    container_id: str,
    container_name: str,
    network: str,
    *,
    ports: Sequence[dict[str, Any]] = (),
    aliases: Sequence[str] = (),
) -> dict[str, Any]:
    """Put the container on ``network``: lease an address, make its namespace and let
    netavark wire it. Returns the record, with ``dns_servers`` and ``search_domains``
    (aardvark-dns on the gateway, for networks with DNS) filled in."""
    from lamina.atomic import write_atomic

    net = netconfig.load(root, network)
    path = record_path(root, container_id)
    with netconfig.lock(root):
        if net["name"] == netconfig.DEFAULT_NETWORK:
            net = netconfig.claim_default(root, net)
        ip, prefix, gateway = _lease(root, net)
        record: dict[str, Any] = {
            "container_id": container_id,
            "container_name": container_name,
            "network": net["name"],
            "ip": ip,
            "prefix": prefix,
            "gateway": gateway,
            "netns": netns_path(root, container_id),
            "ports": [dict(p) for p in ports],
            "aliases": [a for a in aliases if a],
            "config": net,
            "dns_servers": [],
            "search_domains": [],
            # the process that attached (a foreground run, a build step): while it
            # lives the sweep leaves the record alone, whatever the container's state
            "owner_pid": os.getpid(),
            "owner_start": start_time(os.getpid()) or 0,
        }
        os.makedirs(attachments_dir(root), mode=0o700, exist_ok=True)
        # durable: after a power cut the lease must still name what is on the host
        write_atomic(path, dumps(record, sort_keys=True).encode(), 0o600)
    try:
        netns.create(record["netns"])
        status = netavark.setup(root, record["netns"], record)
        record["dns_servers"] = [str(s) for s in status.get("dns_server_ips") or ()]
        record["search_domains"] = [str(s) for s in status.get("dns_search_domains") or ()]
        write_atomic(path, dumps(record, sort_keys=True).encode(), 0o600, durable=False)
    except BaseException:
        detach(root, container_id)
        raise
    return record


def detach(root: str, container_id: str) -> None:
    """Undo :func:`attach` (all of it, or what a crash left of it); no-op without a record."""
    record = read(root, container_id)
    if record is None:
        return
    path = record["netns"] if isinstance(record.get("netns"), str) else ""
    if path and netns.is_bound(path):
        netavark.teardown(root, path, record)
    if path:
        netns.remove(path)
    with suppress(FileNotFoundError):
        os.unlink(record_path(root, container_id))
    config = record.get("config")
    if isinstance(config, dict) and config.get("name") == netconfig.DEFAULT_NETWORK:
        netconfig.touch_claim(config, root)


def in_use(root: str, network: str) -> list[str]:
    """Ids of the containers attached to ``network``."""
    return [str(d["container_id"]) for d in list_records(root) if d.get("network") == network]


def _owner_alive(doc: dict[str, Any]) -> bool:
    pid = doc.get("owner_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = start_time(pid)
    return started is not None and doc.get("owner_start") in (0, started)


def sweep(root: str, running: Callable[[str], bool]) -> list[str]:
    """Detach every container whose attaching process is gone and for which
    ``running(id)`` is false; their ids. Failures of one teardown do not stop the
    others (the record stays for the next sweep)."""
    from lamina.errors import LaminaError

    done = []
    for doc in list_records(root):
        cid = str(doc.get("container_id"))
        if _owner_alive(doc) or running(cid):
            continue
        try:
            detach(root, cid)
        except (LaminaError, OSError):
            continue
        done.append(cid)
    return done
