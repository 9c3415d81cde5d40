"""Registry routing: method, path and query of a request -> a Route (or a refusal).

Input lines: method, path, query.
"""

from __future__ import annotations

from lamina.registry import routes
from lamina.registry.challenges import required_scopes


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    method, _, rest = text.partition("\n")
    path, _, query = rest.partition("\n")
    route = routes.match(method, path, query)
    required_scopes(route)
