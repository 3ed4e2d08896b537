"""Stores for the store tests: migrated, and closed even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store.db import Store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on SQLite or PostgreSQL (the `store_url` parameter)."""
    opened = Store(store_url)
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store at `tmp_path / "node.db"`, as a node's data dir holds it."""
    opened = Store(f"sqlite:///{tmp_path / 'node.db'}")
    opened.migrate()
    yield opened
    opened.close()
