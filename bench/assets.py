"""Benchmark of ABS pools: the loan tree, proofs, verification, tape parsing and anchoring gas.

    python bench/assets.py             # 1,000,000 loans (target: tree build <= 10 s)
    python bench/assets.py --quick     # 10,000 loans
    python bench/assets.py --loans N

Loans are canonical `LoanRecord`s (the 13-field leaf of node.assets.records) with random ids and terms.
- `tree_build_s`: `build_tree` (StandardMerkleTree over the records' leaf values), `peak_rss_mb` after it.
- baseline: the same leaves ABI-encoded and hashed once each with plain keccak (eth_hash), no tree, in this
  run; `build_vs_plain_keccak` = tree build / baseline (the cost of double hashing, sorting and the tree).
- `proofs_per_s`: proofs of random loans; `verifications_per_s`: the auditor's offline check of a loan
  (record -> leaf, proof -> root).
- `tape_parse_loans_per_s`: CSV rows through `parse_tape` (identifiers normalised and keyed-hashed);
  `store_loans_per_s`: the parsed loans stored as a draft (records and indicators) in a SQLite store.
- gas, on a private anvil with a one-founder consortium: anchorVersion receipts at two loan counts;
  `gas_per_loan_id` is the slope, `anchor_base_gas` the intercept, `max_loans_per_anchor` what fits a
  30M-gas block. Prints readable lines, then one JSON object as the last line.
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
from node.assets.loan_tape import REQUIRED_COLUMNS, parse_tape
from node.assets.pools import build_tree, store_draft
from node.assets.records import LEAF_ENCODING, Amortisation, LoanPurpose, LoanRecord, LoanStatus
from node.chain.asset_registry import AssetRegistryClient
from node.chain.client import ChainClient
from node.chain.deployment import deploy_consortium
from node.chain.registry import FoundingMember, MemberRole
from node.chain.signer import Signer
from node.merkle import verify_proof
from node.merkle.abi_pack import RowEncoder
from node.store.db import Store

MAX_PROOFS = 100_000
TAPE_ROWS = 5_000
BLOCK_GAS_LIMIT = 30_000_000


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


def anchor_gas(sizes: Sequence[int], rng: random.Random) -> dict[int, int]:
    with private_chain() as rpc_url:
        signer = Signer.generate()
        client = ChainClient(rpc_url, signer=signer)
        deployment = deploy_consortium(client, network="bench", founders=[
            FoundingMember(signer.address, MemberRole.member, "Bench bank", "BENCH-0", b"\x01" * 32)])
        registry = AssetRegistryClient(client, deployment.address("AssetRegistry"))
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
          f"{base:,.0f} per version; {int((BLOCK_GAS_LIMIT - base) // per_id):,} ids fit a 30M-gas block")

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
        "gas_per_loan_id": round(per_id, 1),
        "anchor_base_gas": round(base),
        "anchor_gas": {str(k): v for k, v in gas.items()},
        "max_loans_per_anchor": int((BLOCK_GAS_LIMIT - base) // per_id),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
