"""What the runtime and the CLI ask of a network stack, as a contract.

A *network* is a named bridge with one IPv4 subnet, NAT out (unless internal) and, for
user networks, a DNS server that knows its containers by name. A container is
*attached* to one network for as long as it runs: it gets an address leased on the
subnet, a network namespace of its own (bind-mounted under the state root, so the OCI
runtime joins it by path) and its published ports forwarded from the host.

Lifecycle and invariants:

- :meth:`Networks.attach` is called after the container's record exists and before
  its runtime starts; it leases first and records the lease durably, so a crash at any
  later point leaves a record :meth:`Networks.sweep` can undo.
- :meth:`Networks.detach` undoes everything ``attach`` made on the host (veth,
  firewall rules, DNS entries, the namespace, the lease); it is idempotent and a no-op
  for a container that has no attachment (``--network host|none``).
- :meth:`Networks.sweep` detaches every container the caller says is not running.
- Names and subnets: see :mod:`lamina.network.config` (the default network ``lamina``
  is made on first use; ``bridge`` means it).

Errors: NotFound (unknown network, netavark missing), AlreadyExists (name or subnet
taken), Conflict (removing a network in use), LimitExceeded (no address or subnet
left), ToolError (netavark failed; its message is passed on).

The implementation is :class:`lamina.network.stack.NetavarkNetworks`; its functions
work on plain JSON-shaped dicts because the fast path of ``lamina run`` calls them
without importing dataclasses or typing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

Record = dict[str, Any]
"""An attachment: ``container_id``, ``network``, ``ip``, ``prefix``, ``gateway``,
``netns``, ``ports`` (netavark port mappings), ``aliases``, ``dns_servers``,
``search_domains``, ``config`` (the network's config when attached)."""


class Networks(Protocol):
    """The networks of one state root."""

    def attach(
        self,
        container_id: str,
        container_name: str,
        network: str,
        *,
        ports: Sequence[dict[str, Any]] = (),
        aliases: Sequence[str] = (),
    ) -> Record: ...

    def detach(self, container_id: str) -> None: ...

    def sweep(self, running: Callable[[str], bool]) -> list[str]: ...

    def attachment(self, container_id: str) -> Record | None: ...

    def create(
        self, name: str, *, subnet: str | None = None, internal: bool = False
    ) -> dict[str, Any]: ...

    def list(self) -> list[dict[str, Any]]: ...

    def inspect(self, name: str) -> dict[str, Any]: ...

    def remove(self, name: str) -> None: ...
