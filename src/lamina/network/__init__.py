"""Container networks over Podman's netavark (+ aardvark-dns): bridges with NAT,
published ports, names on user networks.

- :mod:`~lamina.network.api`: the :class:`Networks` contract (lifecycle, errors).
- :mod:`~lamina.network.config`: network configs under ``<root>/networks/``, the
  default network ``lamina``, host-wide subnet claims.
- :mod:`~lamina.network.attachments`: a container's lease, namespace and ports;
  attach, detach, sweep after a crash.
- :mod:`~lamina.network.netavark`: the driver (``netavark setup|teardown NETNS``).
- :mod:`~lamina.network.netns`: bind-mounted network namespaces.
- :mod:`~lamina.network.ports`: ``-p/--publish`` parsing.
- :mod:`~lamina.network.stack`: :class:`NetavarkNetworks`, the implementation.

Rows inside: stack -> attachments -> (netavark, netns, config) -> spawn. Everything
but api and stack imports no dataclasses or typing: the fast path of ``lamina run``
calls it.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.network.api import Networks
    from lamina.network.config import DEFAULT_NETWORK
    from lamina.network.stack import NetavarkNetworks

__all__ = ["DEFAULT_NETWORK", "NetavarkNetworks", "Networks"]

_HOME = {"DEFAULT_NETWORK": "config", "NetavarkNetworks": "stack", "Networks": "api"}

__getattr__, __dir__ = lazy_exports(globals(), _HOME)
