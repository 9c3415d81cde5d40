"""Network configs: one JSON document per network under ``<root>/networks/``, in
netavark's own format (the ``network_info`` entry of its setup input), so it is handed
to netavark as is.

The default network ``lamina`` is made on first use: a bridge, NAT out, no DNS server
(as Podman's default ``podman`` network: containers get the host's resolvers). Networks
made with ``lamina network create`` get aardvark-dns, so their containers find each
other by name.

Subnets and bridge names are host-wide resources, but every state root has its own
networks; so each network *claims* its subnet in a host-wide directory
(:data:`CLAIMS_DIR`, one ``O_EXCL`` file per subnet naming the config that holds it).
A claim whose config is gone (a deleted root) is stale and taken over. Without
``--subnet`` a network gets the first free ``10.89.N.0/24`` and the bridge
``laminaN`` (10.89 and not 10.88: Podman's default network is 10.88.0.0/16); with
``--subnet`` the bridge is ``lamina`` and the subnet's address in hex.

Light imports only: the fast path of ``lamina run`` reads configs.
"""

from __future__ import annotations

import os
import time

from lamina.lightstd import Flock, dumps, loads, suppress
from lamina.stateroot import networks_dir

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NETWORK = "lamina"
# Words --network takes that are not network names.
RESERVED = ("bridge", "host", "none", "default")
CLAIMS_DIR = "/run/lamina/subnets"
HOST_LOCK = "/run/lamina/networks.lock"
# How long an idle default network keeps its subnet after its last attach or detach.
IDLE_GRACE = 120.0
SUBNET_POOL = (10, 89)  # 10.89.N.0/24, N = 0..255
_MAX_CONFIG = 1 << 20
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_name(name: str) -> None:
    """netavark's rule for names: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, here at most 64 long."""
    from lamina.errors import InvalidArgument

    if (
        not name
        or len(name) > 64
        or not name[0].isalnum()
        or not name.isascii()
        or not set(name) <= _NAME_CHARS
    ):
        raise InvalidArgument(
            f"invalid network name {name!r}",
            hint="use letters, digits, '_', '.' and '-', starting with a letter or digit",
        )


def config_path(root: str, name: str) -> str:
    check_name(name)
    return os.path.join(networks_dir(root), name + ".json")


def lock(root: str) -> Flock:
    """Held while networks are made or removed and while addresses are leased. One lock
    for the whole host, not per root: subnet claims are host-wide, and a claim checked
    in one root must not be taken over by another before the lease is written. Every
    holder only reads and writes small files (netavark runs outside it)."""
    os.makedirs(networks_dir(root), mode=0o700, exist_ok=True)
    os.makedirs(CLAIMS_DIR, mode=0o755, exist_ok=True)
    return Flock(HOST_LOCK)


# ---------------------------------------------------------------------- IPv4 (light)


def ip_to_int(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        from lamina.errors import InvalidArgument

        raise InvalidArgument(f"{text!r} is not an IPv4 address")
    return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])


def int_to_ip(value: int) -> str:
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def parse_subnet(text: str) -> tuple[int, int]:
    """``a.b.c.d/p`` -> (network address as int, prefix length); the host bits must be 0
    and the prefix between 8 and 30 (room for a gateway and a container)."""
    from lamina.errors import InvalidArgument

    address, slash, prefix = text.partition("/")
    if not slash or not prefix.isdigit() or not 8 <= int(prefix) <= 30:
        raise InvalidArgument(
            f"subnet {text!r} is not a.b.c.d/PREFIX with PREFIX 8..30", hint="e.g. 10.89.7.0/24"
        )
    value, bits = ip_to_int(address), int(prefix)
    if value & ((1 << (32 - bits)) - 1):
        raise InvalidArgument(f"subnet {text!r} has host bits set")
    return value, bits


# ---------------------------------------------------------------------- claims


def _claim_file(subnet: str) -> str:
    return os.path.join(CLAIMS_DIR, subnet.replace("/", "_"))


def _claim_holder_alive(path: str, subnet: str) -> bool:
    """Whether the claim at ``path`` still holds: its network's config exists and has
    that subnet, and, for a default network, a container is attached to it (a default
    network is made in every root, tests make thousands of roots: an idle one gives its
    subnet up and takes a new one at its next use, see :func:`claim_default`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            owner = fh.read(4096).strip()
        with open(owner, "rb") as fh:
            doc = loads(fh.read(_MAX_CONFIG))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or not any(
        s.get("subnet") == subnet for s in doc.get("subnets", ())
    ):
        return False
    if doc.get("name") != DEFAULT_NETWORK:
        return True
    try:
        if os.stat(path).st_mtime > time.time() - IDLE_GRACE:
            return True  # used a moment ago: the next run of that root keeps its subnet
    except OSError:
        return False
    from lamina.stateroot import attachments_dir

    root = os.path.dirname(os.path.dirname(owner))
    try:
        return any(
            _attached_to(os.path.join(attachments_dir(root), e), DEFAULT_NETWORK)
            for e in os.listdir(attachments_dir(root))
        )
    except OSError:
        return False


def _attached_to(record: str, network: str) -> bool:
    try:
        with open(record, "rb") as fh:
            doc = loads(fh.read(_MAX_CONFIG))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("network") == network


def _claim_owner(subnet: str) -> str | None:
    try:
        with open(_claim_file(subnet), encoding="utf-8") as fh:
            return fh.read(4096).strip()
    except OSError:
        return None


def touch_claim(doc: dict[str, Any], root: str) -> None:
    """Mark the claim of ``doc``'s subnet as used now (see :data:`IDLE_GRACE`)."""
    path = _claim_file(str(doc["subnets"][0]["subnet"]))
    with suppress(OSError):
        if _claim_owner(str(doc["subnets"][0]["subnet"])) == config_path(root, doc["name"]):
            os.utime(path)


def claim_default(root: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The default network's config with its subnet claimed by this root (the caller
    holds :func:`lock`): re-claimed, or remade on a free subnet when another root took
    it over while this one had no container on it."""
    path = config_path(root, DEFAULT_NETWORK)
    subnet = str(doc["subnets"][0]["subnet"])
    if _claim_owner(subnet) == path or _try_claim(subnet, path):
        touch_claim(doc, root)
        return doc
    return _create_locked(root, DEFAULT_NETWORK, dns=False)


def _try_claim(subnet: str, owner: str) -> bool:
    os.makedirs(CLAIMS_DIR, mode=0o755, exist_ok=True)
    path = _claim_file(subnet)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if _claim_holder_alive(path, subnet):
                return False
            with suppress(FileNotFoundError):  # stale: its root or network is gone
                os.unlink(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(owner + "\n")
        return True
    return False


def release_claim(subnet: str, owner: str) -> None:
    path = _claim_file(subnet)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read(4096).strip() != owner:
                return
        os.unlink(path)
    except FileNotFoundError:
        pass


def _routed(value: int, bits: int) -> bool:
    """Whether the host already routes an overlapping subnet (another bridge, a VPN)."""
    try:
        with open("/proc/net/route", encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        dest = int.from_bytes(bytes.fromhex(fields[1]), "little")
        mask = int.from_bytes(bytes.fromhex(fields[7]), "little")
        common = mask & (((1 << 32) - 1) ^ ((1 << (32 - bits)) - 1))
        if dest & common == value & common:
            return True
    return False


# ---------------------------------------------------------------------- configs


def load(root: str, name: str) -> dict[str, Any]:
    """The config of network ``name``; the default network is made on first use."""
    path = config_path(root, name)
    try:
        with open(path, "rb") as fh:
            doc = loads(fh.read(_MAX_CONFIG))
    except FileNotFoundError:
        if name == DEFAULT_NETWORK:
            with lock(root):
                if not os.path.exists(path):
                    return _create_locked(root, name, dns=False)
            return load(root, name)
        from lamina.errors import NotFound

        raise NotFound(
            f"network {name!r} not found", hint="list them with `lamina network ls`"
        ) from None
    except (OSError, ValueError) as exc:
        from lamina.errors import LaminaError

        raise LaminaError(f"cannot read the config of network {name!r}: {exc}") from exc
    if not isinstance(doc, dict):
        from lamina.errors import InvalidFormat

        raise InvalidFormat(f"the config of network {name!r} is damaged")
    return doc


def create(
    root: str,
    name: str,
    *,
    subnet: str | None = None,
    internal: bool = False,
    dns: bool = True,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Make network ``name`` (AlreadyExists if it exists); return its config."""
    from lamina.errors import AlreadyExists, InvalidArgument

    check_name(name)
    if name in RESERVED:
        raise InvalidArgument(f"{name!r} is a reserved network name", hint="choose another name")
    with lock(root):
        if os.path.exists(config_path(root, name)):
            raise AlreadyExists(f"network {name!r} already exists")
        return _create_locked(
            root, name, subnet=subnet, internal=internal, dns=dns, labels=labels or {}
        )


def _create_locked(
    root: str,
    name: str,
    *,
    subnet: str | None = None,
    internal: bool = False,
    dns: bool,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    from lamina.atomic import write_atomic
    from lamina.errors import AlreadyExists, LimitExceeded

    path = config_path(root, name)
    taken_bridges = set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
    if subnet is not None:
        value, bits = parse_subnet(subnet)
        if not _try_claim(subnet, path):
            raise AlreadyExists(
                f"subnet {subnet} is used by another lamina network on this host",
                hint="choose another --subnet",
            )
        # named by the subnet it serves, which the claim makes unique on the host (and
        # never like the pool's laminaN)
        bridge = f"lamina{value:08x}"
    else:
        own = _own_subnets(root, name)  # an idle default network's claim is not enough
        for n in range(256):
            value, bits = (SUBNET_POOL[0] << 24) | (SUBNET_POOL[1] << 16) | (n << 8), 24
            bridge = f"lamina{n}"
            if bridge in taken_bridges or _routed(value, bits):
                continue
            if f"{int_to_ip(value)}/{bits}" in own:
                continue
            subnet = f"{int_to_ip(value)}/{bits}"
            if _try_claim(subnet, path):
                break
        else:
            raise LimitExceeded(
                "no free subnet left in 10.89.0.0/16", hint="remove networks, or give --subnet"
            )
    doc: dict[str, Any] = {
        "name": name,
        "id": os.urandom(32).hex(),
        "driver": "bridge",
        "network_interface": bridge,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subnets": [{"subnet": subnet, "gateway": int_to_ip(value + 1)}],
        "ipv6_enabled": False,
        "internal": internal,
        "dns_enabled": dns,
        "ipam_options": {"driver": "host-local"},
        "labels": labels or {},
    }
    try:
        write_atomic(path, dumps(doc, sort_keys=True).encode(), 0o600)
    except BaseException:
        release_claim(str(subnet), path)
        raise
    return doc


def _own_subnets(root: str, but: str) -> set[str]:
    """The subnets of this root's networks other than ``but``."""
    out: set[str] = set()
    try:
        entries = os.listdir(networks_dir(root))
    except OSError:
        return out
    for entry in entries:
        if not entry.endswith(".json") or entry == but + ".json":
            continue
        try:
            with open(os.path.join(networks_dir(root), entry), "rb") as fh:
                doc = loads(fh.read(_MAX_CONFIG))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out.update(str(s.get("subnet")) for s in doc.get("subnets", ()))
    return out


def list_networks(root: str) -> list[dict[str, Any]]:
    """Every network's config, by name; the default network is always among them."""
    load(root, DEFAULT_NETWORK)
    out = []
    for entry in sorted(os.listdir(networks_dir(root))):
        if entry.endswith(".json"):
            out.append(load(root, entry[: -len(".json")]))
    return out


def remove(root: str, name: str, *, in_use: list[str]) -> None:
    """Delete network ``name``; Conflict while ``in_use`` (ids of containers on it)."""
    from lamina.errors import Conflict, InvalidArgument

    if name == DEFAULT_NETWORK:
        raise InvalidArgument(f"the default network {name!r} cannot be removed")
    doc = load(root, name)
    if in_use:
        raise Conflict(
            f"network {name!r} is used by {len(in_use)} container(s): "
            + ", ".join(c[:12] for c in in_use),
            hint="remove those containers first",
        )
    path = config_path(root, name)
    with lock(root):
        os.unlink(path)
    for sub in doc.get("subnets", ()):
        release_claim(str(sub.get("subnet")), path)
