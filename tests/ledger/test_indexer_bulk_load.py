"""The indexer's bulk load: a large chunk into a smaller mirror is written with the record indexes dropped and
created again in the same transaction. Same mirror as record by record, indexes back, nothing half-done."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import event, inspect

from node.chain.errors import ChainUnavailable
from node.chain.ledger_events import PublishInput
from node.ledger import indexer as indexer_module
from node.store.db import Store
from tests.conftest import LedgerNodes
from tests.ledger.test_indexer import HookedSource, counts, digest_at, indexer_of, ledger_of, make_records, source_of

RECORD_INDEXES = {"ix_mirror_records_indicator", "ix_mirror_records_block_number"}


def record_indexes(store: Store) -> set[str]:
    return {str(index["name"]) for index in inspect(store.engine).get_indexes("mirror_records")}


def dropped_indexes(store: Store) -> list[str]:
    """Every DROP INDEX statement the store runs from now on, as it runs it."""
    statements: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DROP INDEX"):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", remember)
    return statements


class InputsFailAfterFirst(HookedSource):
    """A real source whose publish-input download fails after the first transaction's input."""

    def iter_publish_inputs(self, tx_hashes: Sequence[str]) -> Iterator[tuple[str, PublishInput | None]]:
        inputs = self.inner.iter_publish_inputs(tx_hashes)
        yield next(inputs)
        raise ChainUnavailable("chain went away mid-chunk")


def test_bulk_load_gives_the_same_mirror_with_its_indexes(ledger_nodes: LedgerNodes, store_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    a = ledger_nodes.nodes[0]
    for seed in range(3):
        ledger_of(a).publish_batch(1, make_records(4, seed=70 + seed))
    monkeypatch.setattr(indexer_module, "BULK_LOAD_MIN_RECORDS", 5)
    store = Store(store_url)
    store.migrate()
    drops = dropped_indexes(store)
    bulk = indexer_of(a, store=store)

    result = bulk.sync()

    sqlite = store.engine.dialect.name == "sqlite"
    assert len(drops) == (len(RECORD_INDEXES) if sqlite else 0)  # PostgreSQL would lock out readers
    assert result.records == 12 and record_indexes(store) >= RECORD_INDEXES
    monkeypatch.setattr(indexer_module, "BULK_LOAD_MIN_RECORDS", 10**9)
    reference = indexer_of(a)  # record by record, into the node's own store
    reference.sync()
    assert counts(store) == counts(a.store)
    assert digest_at(store, bulk, result.to_block) == digest_at(a.store, reference, result.to_block)
    store.close()


def test_bulk_load_is_not_used_for_a_chunk_smaller_than_the_mirror(ledger_nodes: LedgerNodes,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a = ledger_nodes.nodes[0]
    ledger_of(a).publish_batch(1, make_records(8, seed=80))
    monkeypatch.setattr(indexer_module, "BULK_LOAD_MIN_RECORDS", 5)
    indexer = indexer_of(a)
    indexer.sync()
    ledger_of(a).publish_batch(1, make_records(6, seed=81))
    drops = dropped_indexes(a.store)

    result = indexer.sync()

    assert (result.records, drops) == (6, [])
    assert counts(a.store)["records"] == 14


def test_failed_bulk_load_rolls_back_with_its_indexes(ledger_nodes: LedgerNodes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    a = ledger_nodes.nodes[0]
    for seed in range(2):
        ledger_of(a).publish_batch(1, make_records(5, seed=90 + seed))
    monkeypatch.setattr(indexer_module, "BULK_LOAD_MIN_RECORDS", 5)
    drops = dropped_indexes(a.store)
    failing = indexer_of(a, source=InputsFailAfterFirst(source_of(a), lambda _call: None))

    with pytest.raises(ChainUnavailable):
        failing.sync()

    assert len(drops) == len(RECORD_INDEXES)  # the bulk load had started
    assert counts(a.store) == {"batches": 0, "records": 0, "reactions": 0}
    assert record_indexes(a.store) >= RECORD_INDEXES
    assert indexer_of(a).sync().records == 10
