"""The netavark driver: Podman's network stack, run as a tool.

``netavark setup NETNS`` reads one JSON document (the container, its port mappings,
the networks it joins with each one's full config and the address lamina leased on
it) and makes the bridge, the veth pair, the address and routes inside the namespace,
the NAT and port-forwarding firewall rules (iptables here), and for networks with
``dns_enabled`` starts or updates aardvark-dns on the bridge's gateway address.
``netavark teardown NETNS`` given the same document undoes all of it. netavark keeps
no state of its own but aardvark's files under ``--config``; the address management
is the caller's (:mod:`lamina.network.attachments`), as in Podman.

Why netavark and not the CNI plugins: it is what Podman uses today (CNI is deprecated
there), one binary does bridge + firewall + port mapping, and aardvark-dns gives the
containers of a user network each other's names, which CNI's plugins do not.
"""

from __future__ import annotations

import os

from lamina.lightstd import dumps, loads
from lamina.network.spawn import run_tool
from lamina.stateroot import netavark_config_dir

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from typing import Any

# Debian installs both under podman's helper directory, not on PATH.
HELPER_DIRS = ("/usr/lib/podman", "/usr/libexec/podman", "/usr/local/libexec/podman")


def find_helper(name: str) -> str:
    """The path of ``netavark`` or ``aardvark-dns``; NotFound with the package to get."""
    for directory in HELPER_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    import shutil

    found = shutil.which(name)
    if found is None:
        from lamina.errors import NotFound

        raise NotFound(
            f"{name} is not installed (lamina's network stack)",
            hint="apt-get install netavark aardvark-dns, or use --network host|none",
        )
    return found


def setup_input(record: dict[str, Any]) -> dict[str, Any]:
    """netavark's input for the attachment ``record`` (see attachments.attach)."""
    net = record["config"]
    key = stack_name(net)
    return {
        "container_id": record["container_id"],
        "container_name": record["container_name"],
        "port_mappings": record["ports"] or None,
        "networks": {
            key: {
                "static_ips": [record["ip"]],
                "interface_name": "eth0",
                "aliases": record["aliases"],
            }
        },
        "network_info": {key: {**net, "name": key}},
        "dns_servers": None,
    }


def stack_name(net: dict[str, Any]) -> str:
    """The network's name as netavark sees it: its name and the start of its id.
    netavark names its per-network firewall chains after a hash of the name, and every
    state root has a network called ``lamina``: with the plain name two roots would
    share (and tear down) one another's chains."""
    return f"{net['name']}-{net['id'][:12]}"


def _argv(root: str, command: str, netns: str) -> list[str]:
    config = netavark_config_dir(root)
    os.makedirs(config, mode=0o700, exist_ok=True)
    return [
        find_helper("netavark"),
        "--config",
        config,
        "--aardvark-binary",
        _aardvark_or_none(),
        command,
        netns,
    ]


def _aardvark_or_none() -> str:
    """aardvark-dns's path; netavark needs it only for networks with DNS, and says so
    itself when it is missing, so its absence is no error here."""
    for directory in HELPER_DIRS:
        path = os.path.join(directory, "aardvark-dns")
        if os.access(path, os.X_OK):
            return path
    return "aardvark-dns"


# netavark changes host-wide state (the shared NETAVARK-* chains, bridges, aardvark's
# files) without a lock of its own: two at once race ("chain already exists"). Podman
# serialises its calls with a lock file; lamina's is host-wide, for every state root.
HOST_LOCK = "/run/lamina/netavark.lock"


def _call(
    root: str, command: str, netns: str, record: dict[str, Any], hold: int | None = None
) -> bytes:
    import fcntl

    from lamina.errors import ToolError

    os.makedirs(os.path.dirname(HOST_LOCK), mode=0o755, exist_ok=True)
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A teardown keeps the locks (the host's, and ``hold``: the record's) while it
        # runs, even if lamina is killed meanwhile: the next sweep must not start
        # its own teardown beside a netavark still at work. Not setup: it may start
        # aardvark-dns, a daemon that would hold them for ever.
        keep = (fd,) if hold is None else (fd, hold)
        return run_tool(
            _argv(root, command, netns),
            what=f"netavark {command}",
            stdin=dumps(setup_input(record)).encode(),
            keep_fds=keep if command == "teardown" else (),
        )
    except ToolError as exc:
        raise ToolError(_explained(exc.message), hint=exc.hint) from exc
    finally:
        os.close(fd)


def _explained(message: str) -> str:
    """netavark prints its error as JSON on stdout (``{"error": "..."}``), not on stderr;
    run_tool appends that output to its message: keep only the error's text."""
    head, sep, rest = message.partition(" [stdout] ")
    if not sep:
        return message
    try:
        doc = loads(rest)
    except ValueError:
        return message
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return f"{head.split(':', 1)[0]}: {doc['error']}"
    return message


def setup(root: str, netns: str, record: dict[str, Any]) -> dict[str, Any]:
    """Configure the namespace at ``netns``; netavark's status block for the network
    (``interfaces``, ``dns_server_ips``, ``dns_search_domains``)."""
    out = _call(root, "setup", netns, record)
    try:
        doc = loads(out)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        from lamina.errors import ToolError

        raise ToolError(f"netavark setup printed no status: {out[:200]!r}")
    status = doc.get(stack_name(record["config"]))
    return status if isinstance(status, dict) else {}


def teardown(root: str, netns: str, record: dict[str, Any], *, hold: int | None = None) -> None:
    """Undo :func:`setup`: the veth, the firewall rules, the DNS entries. ``hold``: a
    descriptor whose flock netavark keeps until it is done (see :func:`_call`)."""
    _call(root, "teardown", netns, record, hold)


def gone_veth(exc: BaseException) -> bool:
    """Whether netavark's teardown failed because the container's veth is gone already:
    an earlier teardown was cut short (killed) after removing it. netavark stops there,
    before the firewall rules; a setup again and a teardown remove them."""
    return "No such device" in str(getattr(exc, "message", exc))
