"""Micro-benchmark of node.merkle.StandardMerkleTree on a synthetic ABS loan pool.

    python bench/merkle_tree.py              # 1,000,000 loans (target: build <= 10 s, RSS <= ~1.5 GB)
    python bench/merkle_tree.py --quick      # 10,000 loans
    python bench/merkle_tree.py --loans N

Leaves are ["bytes32", "bytes32", "uint256", "uint256", "uint8"]: loan id hash, borrower hash,
principal (cents), maturity (unix time), status. Prints readable lines, then one JSON object as the
last line. The baseline is the naive way to get the same leaf hashes (eth_abi.encode + eth_hash's
keccak per leaf), timed on a sample of at most 10,000 leaves and extrapolated to the pool size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

import eth_abi
from eth_hash.auto import keccak

from node.merkle import StandardMerkleTree, standard_leaf_hash, verify_proof
from node.merkle.standard_tree import _engine

LEAF_ENCODING = ["bytes32", "bytes32", "uint256", "uint256", "uint8"]
BASELINE_SAMPLE = 10_000
MAX_PROOFS = 100_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_loans(count: int, seed: int = 42) -> list[tuple[bytes, bytes, int, int, int]]:
    rng = random.Random(seed)
    return [
        (
            rng.randbytes(32),
            rng.randbytes(32),
            rng.randrange(1_000_00, 5_000_000_00),
            1_767_225_600 + rng.randrange(30 * 365 * 86_400),
            rng.randrange(5),
        )
        for _ in range(count)
    ]


def baseline_leaf_hashing_s(loans: Sequence[Sequence[Any]], total: int) -> float:
    """Seconds the naive per-leaf eth_abi.encode + keccak would take for `total` leaves."""
    sample = loans[:BASELINE_SAMPLE]
    start = time.perf_counter()
    hashes = [keccak(keccak(eth_abi.encode(LEAF_ENCODING, loan))) for loan in sample]
    elapsed = time.perf_counter() - start
    if hashes[0] != standard_leaf_hash(LEAF_ENCODING, sample[0]):
        raise SystemExit("baseline and tree disagree on a leaf hash")
    return elapsed * total / len(sample)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 loans")
    parser.add_argument("--loans", type=int, default=1_000_000, help="pool size (default 1,000,000)")
    args = parser.parse_args(argv)
    count = 10_000 if args.quick else args.loans
    if count < 1:
        parser.error("--loans must be at least 1")

    loans = make_loans(count)
    data_rss = peak_rss_mb()
    print(f"merkle_tree: {count:,} loans {LEAF_ENCODING}, keccak engine {_engine().name}")

    start = time.perf_counter()
    tree = StandardMerkleTree.of(loans, LEAF_ENCODING)
    build_s = time.perf_counter() - start
    rss = peak_rss_mb()
    print(f"build:          {build_s:8.3f} s   root {tree.root_hex}")
    print(f"peak RSS:       {rss:8.0f} MB  (loan data alone {data_rss:.0f} MB)")

    rng = random.Random(7)
    indices = [rng.randrange(count) for _ in range(min(count, MAX_PROOFS))]
    start = time.perf_counter()
    proofs = [tree.proof(i) for i in indices]
    proofs_per_s = len(indices) / (time.perf_counter() - start)
    print(f"proofs:         {proofs_per_s:8,.0f} /s  ({len(indices):,} proofs of {len(proofs[0])} nodes)")

    leaves = [tree.leaf_hash(loans[i]) for i in indices]
    root = tree.root
    start = time.perf_counter()
    verified = [verify_proof(root, leaf, proof) for leaf, proof in zip(leaves, proofs, strict=True)]
    verifications_per_s = len(indices) / (time.perf_counter() - start)
    if not all(verified):
        raise SystemExit("a proof failed to verify")
    print(f"verifications:  {verifications_per_s:8,.0f} /s")

    baseline_s = baseline_leaf_hashing_s(loans, count)
    ratio = build_s / baseline_s
    print(
        f"baseline:       {baseline_s:8.3f} s   eth_abi.encode + keccak for {count:,} leaves "
        f"(extrapolated from {min(count, BASELINE_SAMPLE):,}); build / baseline = {ratio:.3f}"
    )
    print(
        json.dumps(
            {
                "loans": count,
                "tree_build_s": round(build_s, 3),
                "peak_rss_mb": round(rss, 1),
                "loan_data_rss_mb": round(data_rss, 1),
                "proofs_per_s": round(proofs_per_s),
                "verifications_per_s": round(verifications_per_s),
                "baseline_eth_abi_leaf_hashing_s": round(baseline_s, 3),
                "ratio_build_to_eth_abi_leaves": round(ratio, 4),
                "keccak_engine": _engine().name,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
