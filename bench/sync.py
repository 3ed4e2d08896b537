"""Benchmark of the fraud-ledger indexer: indicators per second into a fresh mirror, against fetching the data raw.

    python bench/sync.py             # 1,000,000 indicators in 200 batches of 5,000
    python bench/sync.py --quick     # 50,000 indicators in 10 batches of 5,000
    python bench/sync.py --postgres postgresql+psycopg://user:pw@host/db   # the mirror in PostgreSQL (new schemas)

Runs on a private anvil (started and stopped here) with a one-founder consortium. Setup, not timed: N records are
published in batches of 5,000 (pre-signed publishBatch transactions, sent back to back, one block each).

Timed:
- sync: `Indexer.sync()` from the FraudLedger's deployment block to the head into a fresh, migrated store (SQLite
  in WAL mode with synchronous=FULL, as the node runs it; or a new PostgreSQL schema with --postgres):
  eth_getLogs per 2,000-block chunk, headers and publishBatch transactions in JSON-RPC batches, calldata
  decoding, Merkle root recomputation, field checks, bulk inserts into mirror_batches / mirror_records (with its
  indexes) / indexed_blocks, one commit per chunk;
- raw baseline: the same reads with the same transport and nothing else: eth_getLogs over the same range in the
  same chunks (JSON parsed), then eth_getTransactionByHash for every BatchPublished transaction in JSON-RPC
  batches of the same size (JSON parsed, so the inputs are Python strings). No hex or ABI decoding, no
  headers, no Merkle roots, no database. Run before and after the sync; the faster run counts, so the ratio
  is not flattered by a cold chain;
- store only: the mirror rows the sync wrote, read back, written again into a fresh store through the indexer's
  own write path (bulk load, one insert per 5,000-record batch, one commit), with no chain and no checks. No
  sync of these records into this store can be faster, so `store_only_ratio_to_raw_getlogs` bounds the
  sync ratio from above.

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, fresh_store, parse_args, private_chain, random_ledger_records
from node.chain.client import ChainClient
from node.chain.deployment import deploy_consortium
from node.chain.fraud_ledger import FraudLedgerClient, batch_root, default_publish_gas
from node.chain.ledger_events import LedgerEventSource
from node.chain.registry import FoundingMember, MemberRole
from node.chain.signer import Signer
from node.ledger.indexer import MIRROR_RECORD_COLUMNS, Indexer, bulk_insert, bulk_loading
from node.store.db import Store
from node.store.ledger_tables import MirrorRecord

BATCH = 5_000
CHUNK_BLOCKS = 2_000  # the node's default log_chunk_blocks
BASELINE = ("eth_getLogs over the same range and chunks + eth_getTransactionByHash of every publish tx in "
            "JSON-RPC batches, JSON parsed; no decoding, Merkle roots, headers or database")


def publish(client: ChainClient, ledger: FraudLedgerClient, indicators: int, rng: random.Random) -> int:
    """Publish `indicators` records in batches of BATCH; returns the number of batches."""
    raws = []
    for start in range(0, indicators, BATCH):
        records = random_ledger_records(min(BATCH, indicators - start), rng)
        raws.append(client.sign(ledger.build_publish_tx(1, records, default_publish_gas(len(records)),
                                                        root=batch_root(records))))
    hashes = [client.send_signed(raw) for raw in raws]
    for tx_hash in hashes:
        client.wait_for_receipt(tx_hash)
    return len(raws)


def raw_fetch(source: LedgerEventSource, first: int, last: int) -> tuple[float, int, int]:
    """Seconds to fetch the logs and publish transactions raw; (seconds, logs, calldata bytes)."""
    started = time.perf_counter()
    logs: list[dict[str, Any]] = []
    for start in range(first, last + 1, CHUNK_BLOCKS):
        logs.extend(source.raw_logs(start, min(start + CHUNK_BLOCKS - 1, last)))
    hashes: Sequence[str] = list(dict.fromkeys(log["transactionHash"] for log in logs))
    size = 0
    for start in range(0, len(hashes), source.max_batch):
        size += sum(len(tx["input"]) // 2 - 1 for tx in source.raw_transactions(hashes[start:start + source.max_batch])
                    if tx is not None)
    return time.perf_counter() - started, len(logs), size


def mirror_rows(store: Store) -> list[tuple[Any, ...]]:
    with store.session() as session:
        return [tuple(row) for row in session.execute(
            select(*(getattr(MirrorRecord, column) for column in MIRROR_RECORD_COLUMNS))
            .order_by(MirrorRecord.batch_id, MirrorRecord.position))]


def store_only(rows: list[tuple[Any, ...]], store: Store) -> float:
    """Seconds to write `rows` alone into a fresh, migrated store the way the indexer writes them."""
    started = time.perf_counter()
    with store.transaction() as session, bulk_loading(session, len(rows)):
        for start in range(0, len(rows), BATCH):
            bulk_insert(session, MirrorRecord, MIRROR_RECORD_COLUMNS, rows[start:start + BATCH])
    return time.perf_counter() - started


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--indicators", type=int,
                        help="records to publish and index (default 1,000,000; --quick 50,000)")
    parser.add_argument("--postgres", metavar="URL",
                        help="keep the mirror in this PostgreSQL database (in new schemas, dropped afterwards) "
                             "instead of SQLite")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, configure)
    indicators = args.indicators or (50_000 if args.quick else 1_000_000)
    rng = random.Random(11)

    with private_chain() as rpc_url, tempfile.TemporaryDirectory(prefix="alliance-bench-sync-") as directory:
        signer = Signer.generate()
        client = ChainClient(rpc_url, signer=signer, receipt_timeout=300)
        deployment = deploy_consortium(client, network="bench", founders=[
            FoundingMember(signer.address, MemberRole.member, "Bench bank", "BENCH-0", b"\x01" * 32)])
        ledger = FraudLedgerClient(client, deployment.address("FraudLedger"))
        started = time.perf_counter()
        batches = publish(client, ledger, indicators, rng)
        publish_s = time.perf_counter() - started
        first = deployment.contracts["FraudLedger"].block_number
        source = LedgerEventSource(rpc_url, ledger.address, request_timeout=120)
        last = source.block_number()

        raw_before = raw_fetch(source, first, last)
        with fresh_store(Path(directory), "mirror", args.postgres) as store:
            indexer = Indexer(store, LedgerEventSource(rpc_url, ledger.address, request_timeout=120),
                              contract_address=ledger.address, start_block=first, chunk_blocks=CHUNK_BLOCKS)
            started = time.perf_counter()
            result = indexer.sync()
            sync_s = time.perf_counter() - started
            raw_after = raw_fetch(source, first, last)
            rows = mirror_rows(store)
        with fresh_store(Path(directory), "store_only", args.postgres) as store:
            store_s = store_only(rows, store)
        del rows

    if result.records != indicators or result.to_block != last:
        raise SystemExit(f"the mirror holds {result.records} records up to block {result.to_block}, "
                         f"expected {indicators} up to {last}")
    raw_s, logs, calldata = min(raw_before, raw_after)
    sync_rate, raw_rate = indicators / sync_s, indicators / raw_s
    print(f"sync: {indicators:,} indicators in {batches} batches ({calldata / 1e6:.1f} MB of calldata, "
          f"{logs} logs, blocks {first}..{last}); published in {publish_s:.1f} s")
    print(f"indexer sync: {sync_s:7.2f} s  {sync_rate:>10,.0f} indicators/s")
    print(f"raw fetch:    {raw_s:7.2f} s  {raw_rate:>10,.0f} indicators/s  (runs: {raw_before[0]:.2f} s, "
          f"{raw_after[0]:.2f} s; {BASELINE})")
    print(f"store only:   {store_s:7.2f} s  {indicators / store_s:>10,.0f} indicators/s  (the mirror's writes alone)")
    print(f"sync / raw rate: {sync_rate / raw_rate:.2f}  (at most {raw_s / store_s:.2f}: store only / raw rate)")
    emit({
        "indicators": indicators,
        "batches": batches,
        "batch_size": BATCH,
        "chunk_blocks": CHUNK_BLOCKS,
        "calldata_bytes": calldata,
        "sync_s": round(sync_s, 3),
        "raw_s": round(raw_s, 3),
        "sync_indicators_per_s": round(sync_rate, 1),
        "raw_indicators_per_s": round(raw_rate, 1),
        "sync_ratio_to_raw_getlogs": round(sync_rate / raw_rate, 3),
        "store_only_s": round(store_s, 3),
        "store_only_ratio_to_raw_getlogs": round(raw_s / store_s, 3),
        "baseline": BASELINE,
        "store": "postgresql" if args.postgres else "sqlite",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
