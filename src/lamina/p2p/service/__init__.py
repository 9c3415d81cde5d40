"""The scheduler's HTTP service (``docs/p2p.md``) around the pure core.

Rows: ``serve`` (start/run the server, the host-expiry loop) -> ``app`` (routes, join
token, errors, the seed trigger, ``/metrics``) -> ``stores`` (where state lives:
``memory``, ``redis``) -> :mod:`lamina.p2p.scheduling`.
"""
