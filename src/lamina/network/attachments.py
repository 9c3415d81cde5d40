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


def _lock_record(root: str, container_id: str) -> int | None:
    """A descriptor of the container's record holding its flock, or None when it has no
    record. The lock is held by whoever tears the attachment down (:func:`detach`, or
    the child of :func:`detach_later`): a second detacher waits for the first and then
    finds the record gone, so two never run netavark on one namespace."""
    import fcntl

    path = record_path(root, container_id)
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.stat(path).st_ino
        except FileNotFoundError:
            os.close(fd)
            return None  # detached by the holder while this waited
        except BaseException:
            os.close(fd)
            raise
        if os.fstat(fd).st_ino == current:
            return fd
        os.close(fd)  # replaced (attach rewrites it once): lock the new one


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        doc = loads(os.pread(fd, _MAX_RECORD, 0))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def detach(root: str, container_id: str) -> None:
    """Undo :func:`attach` (all of it, or what a crash left of it); no-op without a record.
    Waits for a teardown already under way (:func:`detach_later`'s) rather than racing it."""
    fd = _lock_record(root, container_id)
    if fd is None:
        return
    try:
        _teardown(root, container_id, fd)
    finally:
        os.close(fd)


def _teardown(root: str, container_id: str, fd: int) -> None:
    """Tear down the attachment whose record ``fd`` holds locked; unlinks the record."""
    record = _read_fd(fd)
    path = record["netns"] if record is not None and isinstance(record.get("netns"), str) else ""
    if record is not None and path and netns.is_bound(path):
        from lamina.errors import ToolError

        try:
            netavark.teardown(root, path, record, hold=fd)
        except ToolError as exc:
            if not netavark.gone_veth(exc):
                raise
            netavark.setup(root, path, record)  # see gone_veth: rewire, then all of it
            netavark.teardown(root, path, record, hold=fd)
    if path:
        netns.remove(path)
    with suppress(FileNotFoundError):
        os.unlink(record_path(root, container_id))
    config = record.get("config") if record is not None else None
    if isinstance(config, dict) and config.get("name") == netconfig.DEFAULT_NETWORK:
        netconfig.touch_claim(config, root)


def detach_later(root: str, container_id: str) -> None:
    """:func:`detach` in a child process the caller does not wait for: ``lamina run``
    returns the container's exit code while netavark still removes the veth and the
    firewall rules (most of a bridge run's cost when it was the network's last
    container). The record's lock is taken here and handed to the child, so every later
    :func:`detach` or :func:`sweep` (and :func:`settle`) waits for the child to finish; if
    the child is killed, the lock goes with it and the record stays for the sweep."""
    fd = _lock_record(root, container_id)
    if fd is None:
        return
    try:
        pid = os.fork()
    except BaseException:
        os.close(fd)
        raise
    if pid == 0:  # the child: fork again so no one has to reap the worker
        try:
            if os.fork() == 0:
                _detached_worker(root, container_id, fd)
        finally:
            os._exit(0)
    os.close(fd)  # the lock stays: the worker's descriptor shares its open file
    os.waitpid(pid, 0)


def _detached_worker(root: str, container_id: str, fd: int) -> None:
    status = 1
    try:
        os.setsid()  # Ctrl-C at the terminal is the container's business, not this one's
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)  # a caller reading our output must not wait for us
        os.closerange(3, fd)
        os.closerange(fd + 1, 1 << 16)  # lamina's other files (none is needed here)
        _teardown(root, container_id, fd)
        status = 0
    finally:  # whatever failed, nobody is left to tell: the record stays for the sweep
        os._exit(status)


def settle(root: str, container_id: str | None = None) -> None:
    """Wait for the teardowns under way (:func:`detach_later`) of ``container_id``, or of
    every container: afterwards the records say what is on the host."""
    if container_id is not None:
        ids = [container_id]
    else:
        try:
            ids = [
                e[: -len(".json")] for e in os.listdir(attachments_dir(root)) if e.endswith(".json")
            ]
        except FileNotFoundError:
            return
    import fcntl

    for cid in ids:
        try:
            fd = os.open(record_path(root, cid), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # returns at once unless a teardown holds it
        finally:
            os.close(fd)


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
