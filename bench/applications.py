"""Benchmark of the loan application pipeline: applications decided per second, and its cost against the bare
identity check it contains.

    python bench/applications.py            # 2,000 applications
    python bench/applications.py --quick    # 200 applications

One bank node (own data dir, keys, SQLite store) on a private anvil; 10% of the applicants are reported to
the ledger first (published and mirrored), so those applications take the decline path.

- `applications_per_s`: `submit_application` back to back, each the full pipeline with the seven built-in
  modules: the application stored (sealed identifiers, velocity fingerprints), identity signals (validation,
  resident-ID consistency, phone plausibility, velocity query, alliance check with its query-log row),
  scorecard, decision rules, decision and trail stored; every hook call on the isolation pool.
- `check_identity_per_s`: `check_identity` of the same applicants' identifiers (four per applicant), the
  baseline measured in the same run, on the same store.
- `pipeline_ratio_to_identity_check`: time per application / time per bare identity check (>1: the overhead
  of the pipeline around the check).
"""

from __future__ import annotations

import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, member_node, parse_args, private_chain

REPORTED_SHARE = 10  # one applicant in ten is on the ledger


def resident_id(i: int) -> str:
    from stdnum.cn import ric

    body = f"110105{1960 + i % 40}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def applicant(i: int) -> dict[str, Any]:
    from stdnum import luhn

    card = f"622202{i:012d}"
    rid = resident_id(i)
    return {"cn_resident_id": rid, "phone": f"139{i:08d}", "bank_card": card + luhn.calc_check_digit(card),
            "device_id": f"device-{i:010d}", "birth_date": f"{rid[6:10]}-{rid[10:12]}-{rid[12:14]}",
            "region_code": "110105"}


def run(count: int) -> dict[str, Any]:
    from node.ledger.checks import check_identity
    from node.ledger.indexer import indexer_for
    from node.ledger.reports import ReportRequest
    from node.modules.credit_platform import ApplicationIn, submit_application

    with private_chain() as rpc_url, tempfile.TemporaryDirectory(prefix="alliance-bench-apps-") as directory:
        node = member_node(rpc_url, directory, "BENCH-APPS", key_seed=5)
        total = 2 * count + 20  # baseline applicants, pipeline applicants, warm-up
        reported = [ReportRequest([("phone", applicant(i)["phone"])], "identity_theft", 90)
                    for i in range(0, total, REPORTED_SHARE)]
        node.report_intake.accept_many(reported, submitted_by="bench")
        node.publisher.drain(timeout_s=600)
        indexer_for(node).sync()

        def application(i: int) -> ApplicationIn:
            return ApplicationIn.model_validate({
                "channel": "mobile_app", "scenario": "consumer_loan", "applicant": applicant(i),
                "amount": Decimal("30000"), "term_months": 12,
                "bank_inputs": {"monthly_income": 15000, "debt_to_income": 0.2, "months_at_employer": 36}})

        for i in range(2 * count, total):  # warm-up: imports, caches, the isolation pool's worker
            submit_application(node, application(i), submitted_by="bench")
            check_identity(node, _pairs(applicant(i)), "bench")

        pairs = [_pairs(applicant(i)) for i in range(count)]
        start = time.perf_counter()
        for identifiers in pairs:
            check_identity(node, identifiers, "bench")
        check_s = time.perf_counter() - start

        bodies = [application(i) for i in range(count, 2 * count)]
        outcomes: dict[str, int] = {}
        start = time.perf_counter()
        for body in bodies:
            outcome = submit_application(node, body, submitted_by="bench")["outcome"]
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        pipeline_s = time.perf_counter() - start
        node.close()
    return {"applications": count, "applications_per_s": round(count / pipeline_s, 1),
            "check_identity_per_s": round(count / check_s, 1),
            "pipeline_ratio_to_identity_check": round(pipeline_s / check_s, 2),
            "pipeline_ms": round(pipeline_s / count * 1000, 3), "check_ms": round(check_s / count * 1000, 3),
            "outcomes": outcomes}


def _pairs(person: dict[str, Any]) -> list[tuple[str, str]]:
    return [(kind, person[kind]) for kind in ("cn_resident_id", "phone", "bank_card", "device_id")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    result = run(200 if args.quick else 2_000)
    print(f"{result['applications']} applications: {result['applications_per_s']}/s "
          f"({result['pipeline_ms']} ms each); bare identity check {result['check_identity_per_s']}/s "
          f"({result['check_ms']} ms); ratio {result['pipeline_ratio_to_identity_check']}; "
          f"outcomes {result['outcomes']}")
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
