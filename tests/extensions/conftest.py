"""Bank nodes A, B, C holding the epoch-1 alliance key, with A's mirror synced."""

from __future__ import annotations

import pytest

from node.ledger.indexer import indexer_for
from node.ledger.key_distribution import sync_keys
from node.runtime import NodeContext
from tests.conftest import LedgerNodes


@pytest.fixture
def banks(ledger_nodes: LedgerNodes) -> list[NodeContext]:
    for node in ledger_nodes.nodes:
        sync_keys(node)  # A generates the epoch-1 key and sends it to B and C; they open it
    indexer_for(ledger_nodes.nodes[0]).sync()
    return ledger_nodes.nodes
