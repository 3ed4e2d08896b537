"""Asset test helpers: bank nodes sharing an alliance key, and loan tapes written as CSV files."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from stdnum.cn import ric

from node.chain.client import ChainClient, Receipt
from node.runtime import NodeContext
from tests.conftest import LedgerNodes, moved_to_store

ALLIANCE_KEY = bytes(range(32))
HEADER = ("loan_reference", "origination_date", "maturity_date", "original_principal", "current_principal",
          "currency", "interest_rate", "purpose", "amortisation_type", "status", "arrears_balance",
          "borrower_resident_id", "borrower_phone", "borrower_name", "borrower_address", "borrower_income")


def resident_id(seed: int) -> str:
    """A valid resident ID (Beijing Dongcheng, born 1980-01-01) with sequence number `seed`."""
    body = f"11010119800101{seed % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")  # the check digit of the first 17 digits


def phone(seed: int) -> str:
    return f"138{seed % 100_000_000:08d}"


def name_of(seed: int) -> str:
    return f"Borrower Zhang {seed}"


def loan_row(seed: int, **changes: str) -> dict[str, str]:
    row = {
        "loan_reference": f"LN-{seed:06d}", "origination_date": "2024-01-15", "maturity_date": "2029-01-15",
        "original_principal": f"{100000 + seed}.00", "current_principal": f"{90000 + seed}.50", "currency": "CNY",
        "interest_rate": "4.35", "purpose": "home", "amortisation_type": "annuity", "status": "current",
        "arrears_balance": "0", "borrower_resident_id": resident_id(seed), "borrower_phone": phone(seed),
        "borrower_name": name_of(seed), "borrower_address": f"{seed} Chang'an Avenue, Beijing",
        "borrower_income": "250000",
    }
    row.update(changes)
    return row


def write_tape(path: Path, rows: Sequence[dict[str, str]], header: Sequence[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)
    return path


def share_alliance_key(nodes: Sequence[NodeContext], epoch: int = 1) -> None:
    """Give every node the epoch's alliance key, as key distribution through envelopes would."""
    for node in nodes:
        node.keyring.store_key(epoch, ALLIANCE_KEY, source="generated" if node is nodes[0] else "envelope")


@pytest.fixture
def banks(ledger_nodes: LedgerNodes) -> Iterator[list[NodeContext]]:
    """Banks A, B, C (members 1, 2, 3) with their own stores, holding the alliance key of epoch 1."""
    share_alliance_key(ledger_nodes.nodes)
    yield ledger_nodes.nodes


@pytest.fixture
def bank_on_store(ledger_nodes: LedgerNodes, banks: list[NodeContext], store_url: str) -> NodeContext:
    """Bank A with its store at `store_url` (SQLite or PostgreSQL), holding the alliance key."""
    moved = moved_to_store(banks[0], store_url)
    ledger_nodes.nodes.append(moved)  # closed with the others
    share_alliance_key([moved])
    return moved


@pytest.fixture
def replica(ledger_nodes: LedgerNodes, bank_on_store: NodeContext) -> NodeContext:
    """Bank A again, as another process on A's database (a second API replica, or the CLI beside the node)."""
    other = NodeContext(bank_on_store.settings)
    ledger_nodes.nodes.append(other)
    return other


T = TypeVar("T")


class AnswerLost(Exception):
    """The node stopped after sending a transaction, before its receipt."""


def run_again_while_pending(chain: ChainClient, monkeypatch: pytest.MonkeyPatch, action: Callable[[], T]) -> T:
    """`action` stops after sending its transaction (AnswerLost), then runs again while that transaction is still
    pending, as after a crash on a chain with block times; the first copy is mined meanwhile. Returns the second
    run's answer."""
    real_wait = ChainClient.wait_for_receipt

    def stopped(self: ChainClient, tx_hash: str, tx: dict[str, Any] | None = None) -> Receipt:
        raise AnswerLost

    def next_block(self: ChainClient, tx_hash: str, tx: dict[str, Any] | None = None) -> Receipt:
        self.rpc("evm_mine")
        return real_wait(self, tx_hash, tx)

    chain.rpc("evm_setAutomine", [False])
    try:
        with monkeypatch.context() as patched:
            patched.setattr(ChainClient, "wait_for_receipt", stopped)
            with pytest.raises(AnswerLost):
                action()
            patched.setattr(ChainClient, "wait_for_receipt", next_block)
            block_time = threading.Timer(0.5, lambda: chain.rpc("evm_mine"))  # the first copy is mined meanwhile
            block_time.start()
            again = action()
            block_time.join()
    finally:
        chain.rpc("evm_setAutomine", [True])
    return again
