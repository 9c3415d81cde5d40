"""The S3 server the storage tests share: one SeaweedFS per test process."""

from __future__ import annotations

import pytest

from helpers.seaweed import Seaweed, shared_seaweed


@pytest.fixture(scope="session")
def seaweed() -> Seaweed:
    """A running SeaweedFS with a bucket and a checked S3 identity (started once)."""
    return shared_seaweed()
