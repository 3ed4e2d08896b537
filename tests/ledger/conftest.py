"""Fixtures of the read-side ledger tests: a node on a store, without a chain, holding epoch 1's alliance key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime import NodeContext
from tests.ledger.test_checks import node_on_store


@pytest.fixture
def node(data_dir: Path, store_url: str) -> Iterator[NodeContext]:
    context = node_on_store(data_dir, store_url)
    yield context
    context.close()


@pytest.fixture
def key(node: NodeContext) -> bytes:
    secret = os.urandom(32)
    node.keyring.store_key(1, secret, source="generated")
    return secret
