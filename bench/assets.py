"""Benchmark of ABS pools: the loan tree, proofs, verification, tape parsing and anchoring gas.

    python bench/assets.py             # 1,000,000 loans (target: tree build <= 10 s), anchored in chunks
    python bench/assets.py --quick     # 10,000 loans; 50,000 anchored
    python bench/assets.py --loans N [--anchor-loans M]

Loans are canonical `LoanRecord`s (the 13-field leaf of node.assets.records) with random ids and terms.
- `tree_build_s`: `build_tree` (StandardMerkleTree over the records' leaf values), `peak_rss_mb` after it.
- baseline: the same leaves ABI-encoded and hashed once each with plain keccak (eth_hash), no tree, in this
  run; `build_vs_plain_keccak` = tree build / baseline (the cost of double hashing, sorting and the tree).
- `proofs_per_s`: proofs of random loans; `verifications_per_s`: the auditor's offline check of a loan
  (record -> leaf, proof -> root).
- `tape_parse_loans_per_s`: CSV rows through `parse_tape` (identifiers normalised and keyed-hashed);
  `store_loans_per_s`: the parsed loans stored as a draft (records and indicators) in a SQLite store.
- gas, on a private anvil (the dev chain's settings) with a one-founder consortium: single anchorVersion
  receipts at two loan counts; `gas_per_loan_id_marginal` is the slope, `anchor_base_gas` the intercept.
- `anchor_s`: the end-to-end anchoring of a version of `anchor_loans` loans (default the pool size, 1,000,000;
  `--quick` 50,000) as the node does it: anchorVersion with the first chunk, then `publish_remaining_ids`
  in chunks of `loan_id_chunk_size` (`chunk_ids`, well under a 30M-gas block); `gas_per_loan_id` is the
  gas of all those receipts per loan id, `anchor_transactions` their number. Baseline, same chain: one
  anchorVersion of 30,000 ids in a single transaction (the old scheme near its ~35,000-id ceiling in a
  30M-gas block); `gas_vs_single_tx` and `speed_vs_single_tx` compare per id. `mirror_sync_s`: another node's
  loan-id mirror (SQLite) taking in the whole version. `double_financing_read_s`: the auditor's double-financing
  check on that chain (node.assets.verify: every LoanIdsPublished chunk read, then the pools holding one loan);
  baseline, same chain: the same events read and decoded by web3 (`web3_decoded_read_s`).
- `service_s`, `service_gas`, `service_transactions`: a servicing report of that version with every loan's status
  on chain (4 bits a loan: reportServicing with the first chunk, then `publish_remaining_statuses`);
  `service_gas_per_loan` against `report_root_only_gas`, a report carrying one byte of statuses (about the root
  alone, as before the statuses went on chain). `status_tree_rebuild_s`: what a bundle or the verifier pays for
  that period from the chain alone (`ChainStatuses`: the version's ids and the statuses read, the status tree
  rebuilt and checked).
  Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from eth_hash.auto import keccak
from stdnum.cn import ric

from bench._common import emit, parse_args, private_chain
from node.assets.history import ChainStatuses, pools_holding_loan
from node.assets.lifecycle import publish_remaining_statuses
from node.assets.loan_tape import REQUIRED_COLUMNS, parse_tape
from node.assets.pools import build_tree, publish_remaining_ids, store_draft
from node.assets.records import (
    LEAF_ENCODING,
    STATUS_ENCODING,
    Amortisation,
    LoanPurpose,
    LoanRecord,
    LoanStatus,
    pack_statuses,
)
from node.assets.screening import sync_loan_mirror, version_complete
from node.chain.asset_registry import STATUS_CHUNK_BYTES, AssetRegistryClient, loan_id_chunk_size
from node.chain.client import ChainClient
from node.chain.deployment import deploy_consortium
from node.chain.registry import FoundingMember, MemberRole
from node.chain.signer import Signer
from node.merkle import StandardMerkleTree, verify_proof
from node.merkle.abi_pack import RowEncoder
from node.store.db import Store

MAX_PROOFS = 100_000
TAPE_ROWS = 5_000
BLOCK_GAS_LIMIT = 30_000_000
SINGLE_TX_IDS = 30_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_records(count: int, rng: random.Random) -> list[LoanRecord]:
    purposes, amortisations, statuses = list(LoanPurpose), list(Amortisation), list(LoanStatus)
    records = []
    for _ in range(count):
        original = rng.randrange(1_000_00, 5_000_000_00)
        records.append(LoanRecord(
            rng.randbytes(32), rng.randbytes(32), 1, 20_240_101 + rng.randrange(28), 20_340_101 + rng.randrange(28),
            original, rng.randrange(original), "CNY", rng.randrange(20_000, 80_000), rng.choice(purposes),
            rng.choice(amortisations), rng.choice(statuses), 0))
    return records


def plain_keccak_s(records: Sequence[LoanRecord]) -> float:
    """Seconds to ABI-encode every leaf (the tree's fast encoder) and keccak it once: no tree, no sort."""
    start = time.perf_counter()
    encoded = RowEncoder(LEAF_ENCODING).encode_rows([r.leaf_values() for r in records])
    hashes = list(map(keccak, encoded))
    elapsed = time.perf_counter() - start
    assert len(hashes) == len(records)
    return elapsed


def tape_text(rows: int) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*REQUIRED_COLUMNS, "borrower_resident_id", "borrower_phone"])
    writer.writeheader()
    for i in range(rows):
        body = f"11010119800101{i % 1000:03d}"
        writer.writerow({
            "loan_reference": f"LN-{i:07d}", "origination_date": "2024-01-15", "maturity_date": "2034-01-15",
            "original_principal": "350000.00", "current_principal": "310000.55", "currency": "CNY",
            "interest_rate": "3.95", "purpose": "home", "amortisation_type": "annuity", "status": "current",
            "arrears_balance": "0", "borrower_resident_id": body + ric.calc_check_digit(body + "0"),
            "borrower_phone": f"138{i:08d}"})
    return text.getvalue()


def bench_registry(rpc_url: str) -> AssetRegistryClient:
    """A one-founder consortium on the chain at `rpc_url`, and its AssetRegistry as that founder."""
    signer = Signer.generate()
    client = ChainClient(rpc_url, signer=signer)
    deployment = deploy_consortium(client, network="bench", founders=[
        FoundingMember(signer.address, MemberRole.member, "Bench bank", "BENCH-0", b"\x01" * 32)])
    return AssetRegistryClient(client, deployment.address("AssetRegistry"))


def anchor_large(records: Sequence[LoanRecord], root: bytes) -> dict[str, float]:
    """Anchor one version of all `records` as the node does (first chunk, then the rest in chunks), then sync
    a mirror of it; times and gas from the receipts."""
    loan_ids = [r.loan_id for r in records]
    with private_chain() as rpc_url:
        registry = bench_registry(rpc_url)
        single_pool, _ = registry.register_pool(b"\x01" * 32)
        start = time.perf_counter()
        single = registry.anchor_version(single_pool, b"\x01" * 32, 1, loan_ids[:SINGLE_TX_IDS])
        single_s = time.perf_counter() - start
        pool_id, _ = registry.register_pool(b"\x02" * 32)
        block_gas_limit = registry.block_gas_limit()
        chunk = loan_id_chunk_size(BLOCK_GAS_LIMIT)  # sized for a 30M-gas block whatever the dev chain allows
        start = time.perf_counter()
        anchored = registry.anchor_version(pool_id, root, sum(r.current_principal for r in records),
                                           loan_ids[:chunk], loan_count=len(loan_ids))
        chunks = publish_remaining_ids(registry, pool_id, anchored.version, loan_ids, chunk_size=chunk)
        anchor_s = time.perf_counter() - start
        if registry.loan_ids_published(pool_id, anchored.version) != len(loan_ids):
            raise SystemExit("the version's ids were not all published")
        gas = anchored.gas_used + sum(c.gas_used for c in chunks)
        with tempfile.TemporaryDirectory(prefix="alliance-bench-") as directory:
            store = Store(f"sqlite:///{directory}/mirror.db")
            store.migrate()
            start = time.perf_counter()
            sync_loan_mirror(store, registry)
            mirror_s = time.perf_counter() - start
            with store.session() as session:
                if not version_complete(session, pool_id, anchored.version):
                    raise SystemExit("the mirror did not take in the whole version")
            store.close()
        # The last id: the single-transaction baseline pool holds the first SINGLE_TX_IDS only, so the last of a
        # version no larger is in both pools.
        held_by = [pool_id] if len(loan_ids) > SINGLE_TX_IDS else [single_pool, pool_id]
        check_s, web3_s = double_financing_read(registry, loan_ids[-1], expected=held_by)
        service = service_large(registry, records, pool_id, anchored.version, single_pool)
        return {**service, "double_financing_read_s": check_s, "web3_decoded_read_s": web3_s,
                "anchor_s": anchor_s, "gas": gas, "transactions": 1 + len(chunks), "chunk_ids": chunk,
                "max_chunk_gas": max([anchored.gas_used, *(c.gas_used for c in chunks)]),
                "block_gas_limit": block_gas_limit, "mirror_sync_s": mirror_s,
                "single_gas_per_id": single.gas_used / SINGLE_TX_IDS, "single_ids_per_s": SINGLE_TX_IDS / single_s}


def service_large(registry: AssetRegistryClient, records: Sequence[LoanRecord], pool_id: int, version: int,
                  small_pool: int) -> dict[str, float]:
    """Report period 1 of the version with every loan's status, as the node does; then rebuild its status tree from
    the chain alone. The root-only baseline: a report on `small_pool` carrying one byte of statuses, after a first
    report of that pool (which writes its statuses' progress slot for the first time)."""
    statuses = [int(r.status) for r in records]
    tree = StandardMerkleTree.of([(r.loan_id, s) for r, s in zip(records, statuses, strict=True)], STATUS_ENCODING)
    counts = [statuses.count(code) for code in range(1, len(LoanStatus) + 1)]
    packed = pack_statuses(statuses)
    for period in (1, 2):
        baseline = registry.report_servicing(small_pool, 1, period, b"\x01" * 32, [1, 0, 0, 0, 0, 0, 0], b"\x10")
    start = time.perf_counter()
    report = registry.report_servicing(pool_id, version, 1, tree.root, counts, packed[:STATUS_CHUNK_BYTES])
    head_before = registry.chain.block_number()
    publish_remaining_statuses(registry, pool_id, 1, packed, STATUS_CHUNK_BYTES)
    service_s = time.perf_counter() - start
    head = registry.chain.block_number()
    receipts = [registry.chain.wait_for_receipt(e.tx_hash) for e in registry.reported_statuses(pool_id)
                if e.block_number > head_before]
    start = time.perf_counter()
    rebuilt = ChainStatuses(registry, pool_id, head).tree({"version": version, "period": 1,
                                                           "status_root": "0x" + tree.root.hex()})
    rebuild_s = time.perf_counter() - start
    if rebuilt is None:
        raise SystemExit("the period's statuses on chain do not rebuild its status root")
    return {"service_s": service_s, "service_gas": report.gas_used + sum(r.gas_used for r in receipts),
            "service_transactions": 1 + len(receipts), "report_root_only_gas": baseline.gas_used,
            "status_tree_rebuild_s": rebuild_s}


def double_financing_read(registry: AssetRegistryClient, loan_id: bytes, *, expected: list[int]) -> tuple[float, float]:
    """Seconds of the verifier's double-financing read of `loan_id` on the whole chain, and of its baseline: the same
    LoanIdsPublished events read through web3's event decoder."""
    head = registry.chain.block_number()
    start = time.perf_counter()
    pools = pools_holding_loan(registry.published_loan_ids(to_block=head), loan_id,
                               lambda pool, version: registry.version(pool, version).loan_count)
    check_s = time.perf_counter() - start
    if pools != expected:
        raise SystemExit(f"the loan is held by pools {pools}, not {expected}")
    start = time.perf_counter()
    logs = registry.chain.event_logs(registry.contract.events.LoanIdsPublished(), to_block=head)
    decoded = sum(len(log["args"]["loanIds"]) for log in logs)
    web3_s = time.perf_counter() - start
    if decoded != sum(len(chunk.loan_ids) for chunk in registry.published_loan_ids(to_block=head)):
        raise SystemExit("web3 decoded another number of loan ids")
    return check_s, web3_s


def anchor_gas(sizes: Sequence[int], rng: random.Random) -> dict[int, int]:
    with private_chain() as rpc_url:
        registry = bench_registry(rpc_url)
        pool_id, _ = registry.register_pool(b"\x02" * 32)
        registry.anchor_version(pool_id, b"\x03" * 32, 1, [rng.randbytes(32)])  # warm-up: first version slot
        gas = {}
        for size in sizes:
            records = make_records(size, rng)
            tree = build_tree(records)
            anchored = registry.anchor_version(pool_id, tree.root, sum(r.current_principal for r in records),
                                               [r.loan_id for r in records])
            gas[size] = anchored.gas_used
        return gas


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loans", type=int, default=1_000_000, help="pool size (default 1,000,000)")
    parser.add_argument("--anchor-loans", type=int, default=None,
                        help="loans of the version anchored end to end (default: the pool size; --quick 50,000)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, _options)
    count = 10_000 if args.quick else args.loans
    rng = random.Random(42)
    records = make_records(count, rng)
    data_rss = peak_rss_mb()
    print(f"assets: {count:,} loans, leaf {len(LEAF_ENCODING)} fields")

    start = time.perf_counter()
    tree = build_tree(records)
    build_s = time.perf_counter() - start
    rss = peak_rss_mb()
    print(f"tree build:     {build_s:8.3f} s   root {tree.root_hex}; peak RSS {rss:.0f} MB (records {data_rss:.0f} MB)")

    baseline_s = plain_keccak_s(records)
    print(f"baseline:       {baseline_s:8.3f} s   encode + one keccak per leaf; build / baseline "
          f"{build_s / baseline_s:.2f}")

    indices = [rng.randrange(count) for _ in range(min(count, MAX_PROOFS))]
    start = time.perf_counter()
    proofs = [tree.proof(i) for i in indices]
    proofs_per_s = len(indices) / (time.perf_counter() - start)
    root = tree.root
    start = time.perf_counter()
    verified = all(verify_proof(root, records[i].leaf(), proof) for i, proof in zip(indices, proofs, strict=True))
    verifications_per_s = len(indices) / (time.perf_counter() - start)
    if not verified:
        raise SystemExit("a proof failed to verify")
    print(f"proofs:         {proofs_per_s:8,.0f} /s; record->leaf->root verifications {verifications_per_s:,.0f} /s")

    text = tape_text(TAPE_ROWS)
    start = time.perf_counter()
    parsed = parse_tape(io.StringIO(text, newline=""), alliance_key=bytes(32), key_epoch=1, originator_code="BENCH-0")
    tape_rate = len(parsed) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory(prefix="alliance-bench-") as directory:
        store = Store(f"sqlite:///{directory}/store.db")
        store.migrate()
        start = time.perf_counter()
        store_draft(store, "bench", parsed, originator_code="BENCH-0", key_epoch=1)
        store_rate = len(parsed) / (time.perf_counter() - start)
        store.close()
    print(f"tape import:    {tape_rate:8,.0f} loans/s parsed and hashed, {store_rate:,.0f} loans/s stored "
          f"(SQLite, records + indicators; {TAPE_ROWS:,} CSV rows)")

    small, large = (10, 100) if args.quick else (100, 1_000)
    gas = anchor_gas((small, large), rng)
    per_id = (gas[large] - gas[small]) / (large - small)
    base = gas[small] - per_id * small
    print(f"anchor gas:     {gas[small]:,} ({small} ids), {gas[large]:,} ({large} ids): {per_id:.0f} per loan id, "
          f"{base:,.0f} per version")

    anchor_count = args.anchor_loans or (50_000 if args.quick else count)
    anchor_records = records if anchor_count == count else make_records(anchor_count, rng)
    anchor_root = tree.root if anchor_records is records else build_tree(anchor_records).root
    large_run = anchor_large(anchor_records, anchor_root)
    chunked_per_id = large_run["gas"] / anchor_count
    single_per_id = large_run["single_gas_per_id"]
    ids_per_s = anchor_count / large_run["anchor_s"]
    print(f"anchor {anchor_count:,} loans: {large_run['anchor_s']:.3f} s ({ids_per_s:,.0f} ids/s), "
          f"{large_run['transactions']:,.0f} transactions of <= {large_run['chunk_ids']:,.0f} ids (max "
          f"{large_run['max_chunk_gas']:,.0f} gas, block limit {large_run['block_gas_limit']:,.0f}); "
          f"{chunked_per_id:.1f} gas per loan id all in; mirror sync {large_run['mirror_sync_s']:.1f} s")
    print(f"double financing: the verifier's read {large_run['double_financing_read_s']:.2f} s; baseline, decoded by "
          f"web3: {large_run['web3_decoded_read_s']:.2f} s")
    service_per_loan = (large_run["service_gas"] - large_run["report_root_only_gas"]) / anchor_count
    print(f"servicing:      every status of {anchor_count:,} loans on chain in {large_run['service_s']:.2f} s, "
          f"{large_run['service_transactions']:,.0f} transaction(s), {large_run['service_gas']:,.0f} gas "
          f"({service_per_loan:.1f} per loan over the root-only report's {large_run['report_root_only_gas']:,.0f}); "
          f"status tree rebuilt from the chain in {large_run['status_tree_rebuild_s']:.2f} s")
    print(f"baseline:       one anchorVersion of {SINGLE_TX_IDS:,} ids: {single_per_id:.1f} gas per id, "
          f"{large_run['single_ids_per_s']:,.0f} ids/s; chunked / single gas {chunked_per_id / single_per_id:.3f}")

    emit({
        "loans": count,
        "tree_build_s": round(build_s, 3),
        "peak_rss_mb": round(rss, 1),
        "records_rss_mb": round(data_rss, 1),
        "baseline_plain_keccak_s": round(baseline_s, 3),
        "build_vs_plain_keccak": round(build_s / baseline_s, 2),
        "proofs_per_s": round(proofs_per_s),
        "verifications_per_s": round(verifications_per_s),
        "tape_parse_loans_per_s": round(tape_rate),
        "store_loans_per_s": round(store_rate),
        "gas_per_loan_id_marginal": round(per_id, 1),
        "anchor_base_gas": round(base),
        "anchor_gas": {str(k): v for k, v in gas.items()},
        "anchor_loans": anchor_count,
        "anchor_s": round(large_run["anchor_s"], 3),
        "anchor_transactions": int(large_run["transactions"]),
        "chunk_ids": int(large_run["chunk_ids"]),
        "max_chunk_gas": int(large_run["max_chunk_gas"]),
        "gas_per_loan_id": round(chunked_per_id, 1),
        "baseline_single_tx_gas_per_loan_id": round(single_per_id, 1),
        "gas_vs_single_tx": round(chunked_per_id / single_per_id, 3),
        "anchor_ids_per_s": round(ids_per_s),
        "baseline_single_tx_ids_per_s": round(large_run["single_ids_per_s"]),
        "speed_vs_single_tx": round(ids_per_s / large_run["single_ids_per_s"], 3),
        "mirror_sync_s": round(large_run["mirror_sync_s"], 3),
        "double_financing_read_s": round(large_run["double_financing_read_s"], 3),
        "web3_decoded_read_s": round(large_run["web3_decoded_read_s"], 3),
        "double_financing_read_vs_web3": round(large_run["double_financing_read_s"]
                                               / large_run["web3_decoded_read_s"], 3),
        "service_s": round(large_run["service_s"], 3),
        "service_gas": int(large_run["service_gas"]),
        "service_transactions": int(large_run["service_transactions"]),
        "report_root_only_gas": int(large_run["report_root_only_gas"]),
        "service_gas_per_loan": round(service_per_loan, 1),
        "status_tree_rebuild_s": round(large_run["status_tree_rebuild_s"], 3),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
