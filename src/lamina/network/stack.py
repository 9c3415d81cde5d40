""":class:`NetavarkNetworks`: the :class:`lamina.network.api.Networks` of a state root,
over netavark (:mod:`~lamina.network.netavark`), the configs
(:mod:`~lamina.network.config`) and the attachment records
(:mod:`~lamina.network.attachments`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lamina.network import attachments
from lamina.network import config as netconfig


class NetavarkNetworks:
    def __init__(self, root: str) -> None:
        self.root = root

    def attach(
        self,
        container_id: str,
        container_name: str,
        network: str,
        *,
        ports: Sequence[dict[str, Any]] = (),
        aliases: Sequence[str] = (),
    ) -> dict[str, Any]:
        return attachments.attach(
            self.root, container_id, container_name, network, ports=ports, aliases=aliases
        )

    def detach(self, container_id: str) -> None:
        attachments.detach(self.root, container_id)

    def sweep(self, running: Callable[[str], bool]) -> list[str]:
        return attachments.sweep(self.root, running)

    def attachment(self, container_id: str) -> dict[str, Any] | None:
        attachments.settle(self.root, container_id)
        return attachments.read(self.root, container_id)

    def create(
        self, name: str, *, subnet: str | None = None, internal: bool = False
    ) -> dict[str, Any]:
        return netconfig.create(self.root, name, subnet=subnet, internal=internal)

    def list(self) -> list[dict[str, Any]]:
        return netconfig.list_networks(self.root)

    def inspect(self, name: str) -> dict[str, Any]:
        doc = dict(netconfig.load(self.root, name))
        attachments.settle(self.root)  # no container whose teardown is under way
        doc["containers"] = {
            r["container_id"]: {"name": r["container_name"], "ipv4": f"{r['ip']}/{r['prefix']}"}
            for r in attachments.list_records(self.root)
            if r.get("network") == name
        }
        return doc

    def remove(self, name: str) -> None:
        attachments.settle(self.root)
        netconfig.remove(self.root, name, in_use=attachments.in_use(self.root, name))
