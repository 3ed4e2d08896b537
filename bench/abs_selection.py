"""Benchmark of the ABS asset factory's loan selection (`select_loans`, behind the first page of GET
/v1/abs-factory/eligible and every `build_pool`) on a mid-sized bank's book, and of reading every page of
/eligible.

    python bench/abs_selection.py                 # 100,000 booked loans
    python bench/abs_selection.py --quick         # 5,000 booked loans, and the synthetic rows checked
    python bench/abs_selection.py --loans 20000

One bank node (own data dir, keys, SQLite store) on a private anvil. The book is written straight into the store in
bulk, row by row as booking would write it (`book_loan`): the applicant sealed in the vault, its local fingerprint,
the province of its resident ID, its borrower indicators under the epoch-1 alliance key. Booking N loans through
the pipeline would take hours. The book: 80,000 borrowers per 100,000 loans (repeat borrowers, one in 5,000 of them
borrowing about a hundred times), 60 % of them in one home province, the rest over ten others; 85 % of loans
current, 5 % in arrears, 10 % repaid (a tenth of those with the applicant erased by retention), 1 % in USD, 0.2 %
confirmed as fraud by the bank; 0.5 % of borrowers reported on the ledger (a phone or resident ID in the mirror, a
tenth of those reports expired and a tenth revoked), and 20,000 mirror records of other people. The policy takes
at most half of the pool from one province and at most ten average loans' worth from one borrower. `--quick` also
checks the rows: it drops the borrower indicators, lets `refresh_borrower_indicators` hash them again from the
sealed applicants (the booking path's own code) and requires the same rows and the same selection.

- `select_loans_s`: one `select_loans` call (the best of two, after a warm-up call).
- `select_peak_mb`: the peak of Python allocations during one call (tracemalloc, a separate call).
- `baseline_read_s` / `baseline_peak_mb`: the floor, measured in the same run: a plain SELECT of the columns the
  selection reads from `booked_loans`, into a list of tuples.
- `select_ratio_to_read`: `select_loans_s` / `baseline_read_s`.
- `eligible_all_pages_s`: reading every verdict through `eligible_page` (what the route serves), a tenth of the book
  a page (`eligible_page_size`: 10,000 for 100,000 loans, the route's largest page; `eligible_pages` pages): the first
  page's selection and snapshot, then the later pages from the snapshot (the best of two). The pages are checked to
  list every loan once, with the selection's verdicts and one `total_principal`.
- `eligible_later_pages_s`: of that, the pages after the first.
- `eligible_all_pages_ratio_to_one_selection`: `eligible_all_pages_s` / `select_loans_s`; each page was a whole
  selection before page snapshots, so it was about `eligible_pages`.
- `snapshot_mb`: what one page snapshot of the book holds in memory (its lists and the strings they point to).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, member_node, parse_args, private_chain
from node.modules.abs_factory import MAX_ELIGIBLE_PAGE

HOME_PROVINCE = "44"
OTHER_PROVINCES = ("11", "31", "32", "33", "35", "37", "42", "43", "50", "51")
MONITORED = ("cn_resident_id", "phone", "bank_card", "device_id")
TYPE_CODE = {"cn_resident_id": 1, "phone": 2, "bank_card": 3, "device_id": 4}
OTHER_RECORDS_PER_100K = 20_000
# A pool of at most half the home province, and no borrower above about 10 average loans' worth: both limits leave
# loans out.
POLICY = "[abs]\nmax_borrower_share = {borrower_share}\nmax_region_share = 0.5\n"
BORROWER_SHARE_LOANS = 10


def _resident_id(borrower: int, province: str) -> str:
    from stdnum.cn import ric

    body = f"{province}0105{1960 + borrower % 40}{1 + borrower % 12:02d}{1 + borrower % 28:02d}{borrower % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def _applicant(borrower: int, province: str) -> Any:
    from stdnum import luhn

    from node.extensions.types import Applicant

    card = f"622202{borrower:012d}"
    rid = _resident_id(borrower, province)
    return Applicant(cn_resident_id=rid, phone=f"139{borrower:08d}", bank_card=card + luhn.calc_check_digit(card),
                     device_id=f"device-{borrower:010d}", birth_date=date(int(rid[6:10]), int(rid[10:12]),
                                                                          int(rid[12:14])),
                     region_code=rid[:6], sex="M")


def fill_book(node: Any, count: int, seed: int = 7) -> dict[str, int]:
    """Write `count` booked loans and a mirror into the node's store; what was written, counted."""
    from node.crypto.keyed_hash import indicator_hash
    from node.modules.credit_platform import sealed_applicant_ad
    from node.modules.fingerprints import canonical_or_none, fingerprint, fingerprint_key
    from node.store.application_tables import BookedLoanRow, BorrowerIndicator, LoanApplication
    from node.store.bulk import insert_rows
    from node.store.ledger_tables import MirrorReaction, MirrorRecord

    draw = random.Random(seed)
    keys, local = node.keyring.keys(), fingerprint_key(node)
    borrowers = max(1, count * 4 // 5)
    province = [HOME_PROVINCE if draw.random() < 0.6 else draw.choice(OTHER_PROVINCES) for _ in range(borrowers)]
    reported = set(draw.sample(range(borrowers), max(1, borrowers // 200)))
    heavy = max(1, count // 5_000)
    now, booked_at = int(time.time()), datetime(2026, 1, 5, tzinfo=UTC)
    applications: list[tuple[Any, ...]] = []
    loans: list[tuple[Any, ...]] = []
    indicators: list[tuple[Any, ...]] = []
    mirror: list[tuple[Any, ...]] = []
    reactions: list[tuple[Any, ...]] = []
    hashes: dict[int, list[tuple[str, int, bytes]]] = {}
    counts: Counter[str] = Counter()
    for i in range(count):
        # The first `borrowers` loans have a borrower each; the rest go to borrowers met before (repeat borrowers), a
        # tenth of them to a few who borrow a hundred times (over the borrower limit).
        borrower = (i if i < borrowers else draw.randrange(heavy) if draw.random() < 0.1
                    else draw.randrange(borrowers))
        person = _applicant(borrower, province[borrower])
        application_id = f"app_{i:012d}"
        status = draw.choices(("current", "dpd30", "repaid"), (85, 5, 10))[0]
        erased = status == "repaid" and draw.random() < 0.1
        principal = draw.randrange(5_000, 200_001) * 100
        current = 0 if status == "repaid" else principal - draw.randrange(0, principal // 100 + 1) * 100
        currency = "USD" if draw.random() < 0.01 else "CNY"
        sealed = None if erased else node.vault.encrypt(json.dumps(person.to_json()).encode(),
                                                        associated_data=sealed_applicant_ad(application_id))
        person_fingerprint = None if erased else fingerprint(local, "cn_resident_id", person.cn_resident_id)
        fraud = f"rep_{i:012d}" if not erased and draw.random() < 0.002 else None
        applications.append((application_id, booked_at, "bench", "mobile_app", "consumer_loan", person_fingerprint,
                             f"{principal // 100}", currency, 12, sealed, "{}", "fraud" if fraud else "booked",
                             "approve", 700, f"{principal // 100}", "7.2", "[]", "[]", booked_at, fraud))
        origination = date(2025, 1, 1) + timedelta(days=i % 365)
        loans.append((i + 1, f"L-{i:09d}", application_id, person_fingerprint, person.cn_resident_id[:2], principal,
                      current, draw.randrange(1, 500) * 100 if status == "dpd30" else 0, currency, 72_000, 12,
                      "consumer", origination.isoformat(), (origination + timedelta(days=365)).isoformat(), status,
                      booked_at))
        counts[status] += 1
        counts["erased"] += erased
        counts["fraud_confirmed"] += fraud is not None
        if erased:
            continue
        if borrower not in hashes:  # the same person hashes alike on each of their loans
            hashes[borrower] = [(kind, epoch, indicator_hash(key, kind, canonical))
                                for kind, raw in person.identifiers() if kind in MONITORED
                                for canonical in [canonical_or_none(kind, raw)] if canonical is not None
                                for epoch, key in keys.items()]
        indicators.extend((i + 1, kind, epoch, value) for kind, epoch, value in hashes[borrower])
    for n, borrower in enumerate(sorted(reported)):
        # Its phone or its resident ID, under the newest epoch (a borrower whose only loan was erased: anything).
        kind = ("phone", "cn_resident_id")[n % 2]
        value = next((v for k, _, v in reversed(hashes.get(borrower, [])) if k == kind), draw.randbytes(32))
        expired = n % 10 == 3
        valid_from = now - 400 * 86_400 if expired else now - 30 * 86_400
        mirror.append((1_000 + n // 100, n % 100, value, TYPE_CODE[kind], 1, 90, valid_from, valid_from + 365 * 86_400,
                       draw.randbytes(32), draw.randbytes(32), 2, 1, 100 + n // 100, valid_from))
        if n % 10 == 7:  # the reporter revoked it
            reactions.append(("revoked", value, 2, 1_000 + n // 100, 1, 200 + n, 0, f"0x{n:064x}", now - 86_400))
    for n in range(OTHER_RECORDS_PER_100K * count // 100_000):
        mirror.append((5_000 + n // 1_000, n % 1_000, draw.randbytes(32), 2, 2, 80, now - 86_400, now + 86_400,
                       draw.randbytes(32), draw.randbytes(32), 3, 1, 10_000 + n // 1_000, now - 86_400))
    with node.store.transaction() as session:
        insert_rows(session, LoanApplication, (
            "application_id", "received_at", "submitted_by", "channel", "scenario", "applicant_fingerprint", "amount",
            "currency", "term_months", "sealed_applicant", "bank_inputs", "state", "outcome", "score",
            "limit_amount", "annual_rate_percent", "reasons", "trail", "decided_at", "fraud_report_id"), applications)
        insert_rows(session, BookedLoanRow, (
            "id", "loan_reference", "application_id", "applicant_fingerprint", "region_code", "principal_minor",
            "current_principal_minor", "arrears_minor", "currency", "annual_rate_micros", "term_months", "purpose",
            "origination_date", "maturity_date", "status", "booked_at"), loans)
        insert_rows(session, BorrowerIndicator, ("loan_ref", "identifier_type", "epoch", "indicator"), indicators)
        insert_rows(session, MirrorRecord, (
            "batch_id", "position", "indicator", "identifier_type", "category", "confidence", "valid_from",
            "valid_until", "evidence_hash", "case_ref_hash", "reporter_member_id", "epoch", "block_number",
            "published_at"), mirror)
        insert_rows(session, MirrorReaction, ("kind", "indicator", "member_id", "batch_id", "value", "block_number",
                                              "log_index", "tx_hash", "at"), reactions)
    return {**counts, "borrowers": borrowers, "reported_borrowers": len(reported), "borrower_indicators":
            len(indicators), "mirror_records": len(mirror)}


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def _peak_mb(call: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _read_loans(node: Any) -> list[tuple[Any, ...]]:
    """The floor: the loan columns the selection reads, as plain tuples."""
    from sqlalchemy import select

    from node.store.application_tables import BookedLoanRow as Loan

    with node.store.session() as session:
        return [tuple(row) for row in session.execute(select(
            Loan.id, Loan.loan_reference, Loan.application_id, Loan.applicant_fingerprint, Loan.region_code,
            Loan.principal_minor, Loan.current_principal_minor, Loan.arrears_minor, Loan.currency,
            Loan.annual_rate_micros, Loan.status).order_by(Loan.loan_reference))]


def _verdicts(node: Any) -> tuple[list[str], dict[str, str], int]:
    from node.modules.abs_factory import select_loans

    selection, _ = select_loans(node)
    return selection.selected, selection.excluded, selection.total_principal_minor


def _all_pages(node: Any, page_size: int) -> tuple[list[dict[str, Any]], float]:
    """Every page of GET /v1/abs-factory/eligible, as `eligible_page` answers it, and the seconds the pages after
    the first took."""
    from node.modules.abs_factory import eligible_page

    page = eligible_page(node, limit=page_size)
    pages, start = [page.answer], time.perf_counter()
    while page.next_after is not None:
        page = eligible_page(node, after=page.next_after, limit=page_size)
        pages.append(page.answer)
    return pages, time.perf_counter() - start


def _check_pages(pages: list[dict[str, Any]], expected: tuple[list[str], dict[str, str], int]) -> None:
    """The pages list every loan once, with the selection's verdicts, and one snapshot and total throughout."""
    selected = [r for page in pages for r in page["selected"]]
    excluded = {r: reason for page in pages for r, reason in page["excluded"].items()}
    listed = sorted((*selected, *excluded))
    if (sorted(selected) != sorted(expected[0]) or excluded != expected[1] or len(listed) != len(set(listed))
            or len({(p["snapshot_id"], p["total_principal"]) for p in pages}) != 1
            or pages[0]["total_principal"] != str(Decimal(expected[2]) / 100)):
        raise SystemExit("the pages of /eligible differ from the selection")


def _snapshot_mb(node: Any) -> float:
    """What a page snapshot of the book holds: its two lists and the strings they point to (tracemalloc would also
    count what the selection left in the allocators' free lists)."""
    from node.modules.abs_factory import _verdicts_now

    verdicts = _verdicts_now(node)
    strings = {id(s): s for s in (*verdicts.references, *verdicts.reasons) if s is not None}
    held = sys.getsizeof(verdicts.references) + sys.getsizeof(verdicts.reasons)
    return (held + sum(sys.getsizeof(s) for s in strings.values())) / 2**20


def _rows_as_booking_writes_them(node: Any, expected: tuple[list[str], dict[str, str], int]) -> int:
    """Drop the synthetic borrower indicators, let the booking path's own code hash them again from the sealed
    applicants, and require the same rows and the same selection; the rows it wrote."""
    from sqlalchemy import delete, select

    from node.modules.credit_platform import refresh_borrower_indicators
    from node.store.application_tables import BorrowerIndicator as Row

    def rows() -> set[tuple[Any, ...]]:
        with node.store.session() as session:
            return {(r.loan_ref, r.identifier_type, r.epoch, bytes(r.indicator)) for r in session.scalars(select(Row))}

    synthetic = rows()
    with node.store.transaction() as session:
        session.execute(delete(Row))
    written = refresh_borrower_indicators(node)
    if rows() != synthetic or _verdicts(node) != expected:
        raise SystemExit("the synthetic borrower indicators differ from those the booking path hashes")
    return written


def _run(count: int, *, check_rows: bool) -> dict[str, Any]:
    with private_chain() as rpc_url, tempfile.TemporaryDirectory(prefix="alliance-bench-abs-") as directory:
        policy = Path(directory) / "policy.toml"
        policy.write_text(POLICY.format(borrower_share=BORROWER_SHARE_LOANS / count))
        node = member_node(rpc_url, directory, "BENCH-ABS", key_seed=11, credit_policy_file=policy)
        fill_s, book = _timed(lambda: fill_book(node, count))
        verdicts = _verdicts(node)  # warm-up: imports, the policy, SQLite's page cache
        checked = _rows_as_booking_writes_them(node, verdicts) if check_rows else None
        page_size = max(1, min(MAX_ELIGIBLE_PAGE, count // 10))
        _check_pages(_all_pages(node, page_size)[0], verdicts)
        # One selection and every page, in turns: the machine's load drifts, and their ratio is the figure.
        selections, readings = [], []
        for _ in range(2):
            selections.append(_timed(lambda: _verdicts(node))[0])
            readings.append(_timed(lambda: _all_pages(node, page_size)))
        select_s = min(selections)
        pages_s, (pages, later_s) = min(readings, key=lambda t: t[0])
        read_s = min(_timed(lambda: _read_loans(node))[0] for _ in range(2))
        select_peak, read_peak = _peak_mb(lambda: _verdicts(node)), _peak_mb(lambda: _read_loans(node))
        snapshot_mb = _snapshot_mb(node)
        node.close()
    selected, excluded, total = verdicts
    return {"loans": count, "fill_s": round(fill_s, 2), "book": book, "selected": len(selected),
            "excluded": dict(Counter(excluded.values())), "total_principal_minor": total,
            "select_loans_s": round(select_s, 3), "select_peak_mb": round(select_peak, 1),
            "baseline_read_s": round(read_s, 3), "baseline_peak_mb": round(read_peak, 1),
            "select_ratio_to_read": round(select_s / read_s, 2),
            "eligible_page_size": page_size, "eligible_pages": len(pages), "eligible_all_pages_s": round(pages_s, 3),
            "eligible_later_pages_s": round(later_s, 4),
            "eligible_all_pages_ratio_to_one_selection": round(pages_s / select_s, 2),
            "snapshot_mb": round(snapshot_mb, 1), "rows_checked_against_booking_path": checked}


def main(argv: list[str] | None = None) -> int:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--loans", type=int, default=None,
                            help="booked loans in the book (default 100,000; --quick 5,000)")

    args = parse_args(__doc__, argv, configure)
    count = args.loans or (5_000 if args.quick else 100_000)
    result = _run(count, check_rows=args.quick)
    print(f"{result['loans']} loans (written in {result['fill_s']} s): select_loans {result['select_loans_s']} s, "
          f"peak {result['select_peak_mb']} MB; plain read {result['baseline_read_s']} s, peak "
          f"{result['baseline_peak_mb']} MB; ratio {result['select_ratio_to_read']}; {result['selected']} selected, "
          f"left out {result['excluded']}; every page of /eligible ({result['eligible_pages']} of "
          f"{result['eligible_page_size']}) {result['eligible_all_pages_s']} s (after the first "
          f"{result['eligible_later_pages_s']} s), "
          f"{result['eligible_all_pages_ratio_to_one_selection']} selections; snapshot {result['snapshot_mb']} MB")
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
