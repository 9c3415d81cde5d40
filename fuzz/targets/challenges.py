"""``WWW-Authenticate`` challenges, ``Authorization`` values and token scopes."""

from __future__ import annotations

from fuzz.harness import tolerant
from lamina.registry.challenges import parse_authorization, parse_challenges, parse_scopes


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    tolerant(parse_authorization, text)
    tolerant(parse_scopes, text)
    for challenge in parse_challenges(text):
        _ = challenge.realm, challenge.service
        _ = challenge.scopes
