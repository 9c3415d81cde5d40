"""Fixtures of the store tests: a fresh store, and helper processes that use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.store import LocalStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root)
