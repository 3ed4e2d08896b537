"""Two processes of one node (the API server and a CLI command) making one write with the bank's key at once."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from node.assets import lifecycle
from node.assets.pools import anchor_draft, asset_registry, import_tape
from node.chain.asset_registry import AssetRegistryClient
from node.chain.registry import MemberRole
from node.config import load_settings
from node.runtime import NodeContext
from tests.assets.conftest import loan_row, write_tape
from tests.conftest import TEST_PASSPHRASE, LedgerNodes, moved_to_store

# How long a process that looked on chain and found nothing waits for the other to have looked too before it sends.
# Without the signer's lock both have looked within milliseconds; with it, the other is still waiting for the lock,
# and this one sends once the wait is over.
OVERLAP_WAIT_S = 4.0


def _sent_once_both_looked(arrivals: Path, send: Callable[..., Any]) -> Callable[..., Any]:
    """`send`, delayed until the other process has reached its own send too (or OVERLAP_WAIT_S passed)."""

    def delayed(*args: Any, **kwargs: Any) -> Any:
        (arrivals / str(os.getpid())).touch()
        deadline = time.monotonic() + OVERLAP_WAIT_S
        while len(list(arrivals.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return send(*args, **kwargs)

    return delayed


def _write_in_a_process(node_settings: dict[str, Any], write: str, args: tuple[Any, ...], arrivals: Path,
                        start: Any, answers: Any) -> None:
    """`lifecycle.<write>(node, *args)` run at the barrier `start`; its receipt (hash, block) or error to `answers`."""
    node = NodeContext(load_settings(key_passphrase=TEST_PASSPHRASE, **node_settings))
    try:
        assert node.signer and node.member_id  # the key unlocked and the member found before the start
        send = getattr(AssetRegistryClient, write)
        setattr(AssetRegistryClient, write, _sent_once_both_looked(arrivals, send))
        start.wait(timeout=60)
        receipt = getattr(lifecycle, write)(node, *args)
        answers.put(("done", receipt.tx_hash, receipt.block_number))
    except Exception as exc:  # reported to the test, which fails on it
        answers.put(("failed", f"{type(exc).__name__}: {exc}", 0))
    finally:
        node.close()


def in_two_processes_at_once(nodes: Sequence[NodeContext], tmp_path: Path, write: str,
                             *args: Any) -> list[tuple[str, str, int]]:
    """`write` run by two processes, one of each of `nodes` (their data dirs and stores: one node given twice for two
    processes of one node), that both look on chain before either may send."""
    arrivals = tmp_path / f"arrivals-{write}"
    arrivals.mkdir()
    spawn = multiprocessing.get_context("spawn")
    start, answers = spawn.Barrier(2), spawn.Queue()
    processes = [spawn.Process(target=_write_in_a_process,
                               args=(_settings_of(node), write, args, arrivals, start, answers))
                 for node in nodes]
    for process in processes:
        process.start()
    try:
        return [answers.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)


def _settings_of(node: NodeContext) -> dict[str, Any]:
    return {name: getattr(node.settings, name)
            for name in ("data_dir", "network", "rpc_url", "deployment_file", "database_url")}


def anchored_pool(node: NodeContext, tmp_path: Path, name: str) -> int:
    import_tape(node, name, write_tape(tmp_path / f"{name}.csv", [loan_row(i) for i in range(3)]))
    pool_id = anchor_draft(node, name).anchored.pool_id
    assert pool_id is not None
    return pool_id


def assert_attested_once(reader: NodeContext, pool_id: int, results: list[tuple[str, str, int]]) -> None:
    """Both processes answered one receipt, and the chain holds that one attestation only."""
    assert [r[0] for r in results] == ["done", "done"], results
    assert results[0] == results[1]
    attested = [e.tx_hash for e in asset_registry(reader).pool_events(pool_id) if e.kind == "attested"]
    assert attested == [results[0][1]]


def test_two_processes_attesting_one_version_at_once_record_one_attestation(ledger_nodes: LedgerNodes,
                                                                            banks: list[NodeContext],
                                                                            tmp_path: Path) -> None:
    """The API server and `alliance assets attest` of one auditor node attest the same version at the same moment:
    both looked on chain, found no attestation, and sent one each; the contract takes any number, so the version
    showed the auditor's attestation twice. One process records it, the other finds it: both answer its receipt."""
    auditor = ledger_nodes.admit(tmp_path / "auditor", "AUDIT-1", role=MemberRole.auditor)
    pool_id = anchored_pool(banks[0], tmp_path, "attested")
    results = in_two_processes_at_once([auditor, auditor], tmp_path, "attest", pool_id, 1,
                                       lifecycle.report_hash_of(b"report"))
    assert_attested_once(banks[0], pool_id, results)


@pytest.mark.postgres
def test_two_hosts_attesting_one_version_at_once_on_one_postgresql_store_record_one_attestation(
        ledger_nodes: LedgerNodes, banks: list[NodeContext], postgres_store_url: str, tmp_path: Path) -> None:
    """Two API replicas of one auditor bank on different hosts (their own data dirs, so no shared lock file), with
    the same signing key and one PostgreSQL store, attest the same version at the same moment: both looked on chain,
    found no attestation and sent one each. The store's advisory lock keeps them apart as the lock file keeps apart
    the processes of one data dir: one records it, the other finds it."""
    auditor = moved_to_store(ledger_nodes.admit(tmp_path / "auditor", "AUDIT-1", role=MemberRole.auditor),
                             postgres_store_url)
    ledger_nodes.nodes.append(auditor)  # closed with the others
    other_host = tmp_path / "other-host" / "audit-1"
    shutil.copytree(auditor.settings.data_dir, other_host)  # the same keystore, config and deployment
    replica = NodeContext(auditor.settings.model_copy(update={"data_dir": other_host}))
    ledger_nodes.nodes.append(replica)
    assert replica.address == auditor.address and replica.settings.database_url == postgres_store_url
    pool_id = anchored_pool(banks[0], tmp_path, "attested")
    results = in_two_processes_at_once([auditor, replica], tmp_path, "attest", pool_id, 1,
                                       lifecycle.report_hash_of(b"report"))
    assert_attested_once(banks[0], pool_id, results)


def test_two_processes_accepting_one_transfer_at_once_both_answer_the_accept(banks: list[NodeContext],
                                                                             tmp_path: Path) -> None:
    """Both looked, found the transfer still pending and sent an accept: the second was refused
    (AssetRegistryNoPendingTransfer) although this bank had just accepted the pool."""
    a, b = banks[:2]
    pool_id = anchored_pool(a, tmp_path, "transferred")
    lifecycle.propose_transfer(a, pool_id, "BANK-B")
    results = in_two_processes_at_once([b, b], tmp_path, "accept_transfer", pool_id)
    assert [r[0] for r in results] == ["done", "done"], results
    assert results[0] == results[1]
    steps = [e.kind for e in asset_registry(a).pool_events(pool_id)]
    assert steps == ["registered", "anchored", "transfer_proposed", "transferred"]
