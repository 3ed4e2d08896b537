"""Benchmark of an auditor's sample of provenance bundles from one large pool, built together or one at a time.

    python bench/provenance_sample.py             # a pool of 200,000 loans, 3 servicing periods, a sample of 100
    python bench/provenance_sample.py --quick     # 20,000 loans
    python bench/provenance_sample.py --loans N --periods P --sample S --alone A

A real node (its own data dir, SQLite store, keys; a private anvil for its deployment) imports a tape of `--loans`
loans, anchors it and reports `--periods` servicing periods with every loan's status on chain. Then:
- baseline, in this run: `build_bundle` of `--alone` loans, one call each, as `alliance assets prove LOAN` or
  `GET /v1/assets/loans/{id}/provenance` does (`alone_s_per_loan`);
- `build_bundles` of a random sample of `--sample` loans in one call, as `alliance assets prove --loans-file` or
  `POST /v1/assets/provenance` does (`sample_s_per_loan`).
Each bundle's cost is mostly its trees (the version's from the store, each period's status tree from the chain), so
a sample built together pays them once: `sample_speedup` = alone_s_per_loan / sample_s_per_loan. The bundles of the
loans asked both ways are compared and must be equal.
The auditor's side likewise: `verify_bundle` of the `--alone` bundles one call each (`verify_alone_s_per_loan`, what
`alliance audit verify FILE` does) against `verify_bundles` of the whole sample in one run (`verify_sample_s_per_loan`,
`alliance audit verify DIR`), which reads the chain once for all; every verdict must be VERIFIED.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, member_node, parse_args, private_chain
from bench.assets import tape_text
from node.assets import lifecycle
from node.assets.pools import anchor_draft, import_tape
from node.assets.provenance import build_bundle, build_bundles
from node.assets.verify import verify_bundle, verify_bundles


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loans", type=int, default=200_000, help="pool size (default 200,000)")
    parser.add_argument("--periods", type=int, default=3, help="servicing periods reported (default 3)")
    parser.add_argument("--sample", type=int, default=100, help="loans proven together (default 100)")
    parser.add_argument("--alone", type=int, default=3, help="loans proven one at a time, the baseline (default 3)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, _options)
    loans = 20_000 if args.quick else args.loans
    rng = random.Random(7)
    sample = [f"LN-{i:07d}" for i in rng.sample(range(loans), min(args.sample, loans))]
    alone = sample[:args.alone]
    print(f"provenance sample: a pool of {loans:,} loans, {args.periods} servicing period(s); {len(sample)} loans "
          f"together, {len(alone)} alone")
    with private_chain() as rpc_url, tempfile.TemporaryDirectory(prefix="alliance-bench-") as directory:
        node = member_node(rpc_url, directory, "BENCH-PROVE", key_seed=3)
        tape = Path(directory) / "tape.csv"
        tape.write_text(tape_text(loans))
        start = time.perf_counter()
        import_tape(node, "sample", tape)
        pool_id = anchor_draft(node, "sample").anchored.pool_id
        for period in range(1, args.periods + 1):
            lifecycle.report_servicing(node, pool_id, period)
        print(f"set-up:         {time.perf_counter() - start:8.2f} s   import, anchor, {args.periods} report(s)")

        start = time.perf_counter()
        one_by_one = [build_bundle(node, reference) for reference in alone]
        alone_s = time.perf_counter() - start
        start = time.perf_counter()
        together = build_bundles(node, sample)
        sample_s = time.perf_counter() - start
        registry = node.deployment.address("AssetRegistry")
        node.close()
        start = time.perf_counter()
        verified_alone = [verify_bundle(bundle, rpc_url, registry) for bundle in one_by_one]
        verify_alone_s = time.perf_counter() - start
        start = time.perf_counter()
        verified_together = verify_bundles(together, rpc_url, registry)
        verify_sample_s = time.perf_counter() - start
    if not all(verdict.ok for verdict in [*verified_alone, *verified_together]):
        raise SystemExit("a bundle of the sample did not verify")
    if together[:len(alone)] != one_by_one:
        raise SystemExit("a bundle built in the sample differs from the same loan's bundle built alone")
    if any(len(bundle["loan_statuses"]) != args.periods for bundle in together):
        raise SystemExit("a bundle lacks a servicing period")
    alone_per_loan, sample_per_loan = alone_s / len(alone), sample_s / len(sample)
    print(f"alone:          {alone_per_loan:8.3f} s a loan ({len(alone)} loans in {alone_s:.2f} s)")
    print(f"together:       {sample_per_loan:8.3f} s a loan ({len(sample)} loans in {sample_s:.2f} s); "
          f"{alone_per_loan / sample_per_loan:.1f}x faster a loan")
    verify_alone, verify_sample = verify_alone_s / len(alone), verify_sample_s / len(sample)
    print(f"verify alone:   {verify_alone:8.3f} s a bundle; in one run {verify_sample:.3f} s a bundle "
          f"({len(sample)} in {verify_sample_s:.2f} s): {verify_alone / verify_sample:.1f}x faster a bundle")
    emit({
        "loans": loans,
        "periods": args.periods,
        "sample": len(sample),
        "alone": len(alone),
        "alone_s_per_loan": round(alone_per_loan, 3),
        "sample_s": round(sample_s, 3),
        "sample_s_per_loan": round(sample_per_loan, 4),
        "sample_speedup": round(alone_per_loan / sample_per_loan, 1),
        "verify_alone_s_per_loan": round(verify_alone, 3),
        "verify_sample_s_per_loan": round(verify_sample, 4),
        "verify_sample_speedup": round(verify_alone / verify_sample, 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
