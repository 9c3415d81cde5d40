"""The registry server (aiohttp): ``make_app`` builds the application over a storage
driver, ``serve`` runs it. Every protocol decision is ``lamina.registry.protocol``'s;
this package only does the I/O."""

from __future__ import annotations

from lamina.registry.server.app import UPLOAD_TTL, make_app
from lamina.registry.server.metrics import Metrics
from lamina.registry.server.serve import parse_addr, serve, tls_context

__all__ = ["UPLOAD_TTL", "Metrics", "make_app", "parse_addr", "serve", "tls_context"]
