"""lamina.p2p.daemon: the peer process (``lamina p2p peer``) wired together.

One aiohttp server on ``--addr`` carries the registry mirror (:mod:`lamina.p2p.mirror`),
the piece server (:mod:`lamina.p2p.peer`, when a scheduler is configured) and
``/metrics``. Rooms: ``metrics`` (the Prometheus text), ``serve`` (:func:`run_peer`).
"""

__all__ = ["metrics", "serve"]
