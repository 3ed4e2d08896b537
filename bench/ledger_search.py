"""Benchmark of the indicator search (`GET /v1/fraud/indicators`, node.ledger.indicator_search) and the incremental
STIX export, against the existing export page measured in the same run.

    python bench/ledger_search.py                     # 100,000 mirror records on SQLite
    python bench/ledger_search.py --quick             # 10,000
    python bench/ledger_search.py --postgres URL      # the same on a fresh schema of that PostgreSQL database

The mirror is seeded with bench/checks.py's filler (`prepare_node`: records of 100,000 distinct identifiers, random
category and confidence, five reporters, a thousand records a block), plus reactions in three later blocks: 1% of
the indicators disputed, 1% revoked, 1% endorsed. Each figure is the median of several runs of one page, in
process (the node's functions, no HTTP), on a warm store:

- `export_page_100_s`, `export_page_10000_s`: the baseline, `export_page` of 100 and 10,000 indicators;
- `list_unfiltered_s`: a page of 100 without filters; `list_unfiltered_deep_s` the same from a cursor 90% in;
- `list_category_s` (one of nine categories), `list_reporter_category_s` (one reporter of five and a category),
  `list_no_match_s` (a type no record has: every record is read, the worst case of the SQL filters),
  `list_min_confidence_s` (decayed confidence >= 90), `list_disputed_s` (state=disputed, 1% of the mirror: the page
  examines up to SCAN_BUDGET candidates), `list_changed_s` (changed since the reactions' first block, 3%);
- `export_changed_s`: an incremental export page of up to 10,000 indicators changed since that block;
  `export_changed_and_lapsed_s` the same pull as the API makes it, with the changes of state no block marks since a
  pull a day before (validity starting or ending, disputes lapsing: the record and dispute times read in full).

Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a plain checkout

from bench._common import emit, parse_args, postgres_schema

PAGE = 100
SHARE = 100  # one indicator in SHARE disputed, another revoked, another endorsed


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, help="mirror records to seed (default 100,000; quick 10,000)")
    parser.add_argument("--postgres", help="a PostgreSQL URL: measure on a fresh schema there instead of SQLite")


@contextmanager
def store_url(postgres: str | None) -> Iterator[None]:
    """The node's store on a fresh PostgreSQL schema (`prepare_node` reads ALLIANCE_DATABASE_URL), or its SQLite."""
    if postgres is None:
        yield
        return
    with postgres_schema(postgres, "bench_search") as url:
        os.environ["ALLIANCE_DATABASE_URL"] = url
        try:
            yield
        finally:
            del os.environ["ALLIANCE_DATABASE_URL"]


def add_reactions(node: Any, rng: random.Random) -> int:
    """Disputes, revocations and endorsements of 1% of the indicators each, in three blocks after the records';
    the first of those blocks."""
    from sqlalchemy import func, select

    from node.store.bulk import insert_rows
    from node.store.ledger_tables import MirrorBatch, MirrorReaction, MirrorRecord

    with node.store.transaction() as session:
        # The filler's records name five reporters and its batches one: an export's identities need each reporter's
        # first batch.
        last_batch = int(session.scalar(select(func.max(MirrorBatch.batch_id))) or 0)
        session.add_all(MirrorBatch(batch_id=last_batch + n, reporter_member_id=member, epoch=1, root=os.urandom(32),
                                    record_count=0, accepted_count=0, tx_hash="0x" + os.urandom(32).hex(),
                                    block_number=1, log_index=n, published_at=int(time.time()) - 86_400)
                        for n, member in enumerate(range(3, 7), start=1))
        records = session.execute(select(MirrorRecord.indicator, MirrorRecord.batch_id,
                                         MirrorRecord.reporter_member_id)).all()
        first = int(session.scalar(select(func.max(MirrorRecord.block_number))) or 0) + 1
        chosen = rng.sample(records, 3 * (len(records) // SHARE))
        now = int(time.time())
        rows = []
        for n, (indicator, batch_id, reporter) in enumerate(chosen):
            kind = ("disputed", "revoked", "endorsed")[n % 3]
            member = 7 if kind != "revoked" else reporter
            value = 70 if kind == "endorsed" else 1  # confidence, or the reason code
            rows.append((kind, bytes(indicator), member, batch_id if kind == "revoked" else None, value,
                         first + n % 3, n, "0x" + os.urandom(32).hex(), now - 3600))
        insert_rows(session, MirrorReaction, ["kind", "indicator", "member_id", "batch_id", "value", "block_number",
                                              "log_index", "tx_hash", "at"], rows)
    return first


def median_s(run: Callable[[], object], repeat: int) -> float:
    run()  # warm: the first run reads the pages from disk
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else None, configure=_configure)
    records = args.records or (10_000 if args.quick else 100_000)
    repeat = 3 if args.quick else 7
    from bench.checks import prepare_node
    from node.ledger.indicator_search import IndicatorSearch, search_filters, search_page
    from node.ledger.indicator_state import StatePolicy
    from node.ledger.mirror import MirrorStatus, RecordFilter, indicators_page
    from node.ledger.stix import export_page

    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="alliance-bench-search-"))
        stack.enter_context(store_url(args.postgres))
        began = time.perf_counter()
        node, _, _ = prepare_node(Path(directory) / "node", records, random.Random(7))
        stack.callback(node.close)
        changed_block = add_reactions(node, random.Random(8))
        print(f"seeded {records:,} mirror records and {3 * (records // SHARE):,} reactions on "
              f"{node.store.engine.dialect.name} in {time.perf_counter() - began:.1f} s")
        at, policy = int(time.time()), StatePolicy()
        mirror = MirrorStatus(changed_block + 2, at, None, None, True, None)
        session = stack.enter_context(node.store.session())
        deep = indicators_page(session, after=None, limit=records * 9 // 10)[-1]

        def listing(search: IndicatorSearch, after: bytes | None = None) -> Callable[[], object]:
            return lambda: search_page(session, search, at=at, policy=policy, mirror=mirror, after=after, limit=PAGE)

        cases: dict[str, Callable[[], object]] = {
            "export_page_100_s": lambda: export_page(session, at=at, policy=policy, limit=PAGE),
            "export_page_10000_s": lambda: export_page(session, at=at, policy=policy, limit=10_000),
            "list_unfiltered_s": listing(IndicatorSearch()),
            "list_unfiltered_deep_s": listing(IndicatorSearch(), after=deep),
            "list_category_s": listing(search_filters(category="money_mule")),
            "list_reporter_category_s": listing(IndicatorSearch(RecordFilter(category=5, reporter_member_id=3))),
            "list_no_match_s": listing(search_filters(identifier_type="email")),  # the whole mirror read in vain
            "list_min_confidence_s": listing(search_filters(min_confidence=90)),
            "list_disputed_s": listing(search_filters(state="disputed")),
            "list_changed_s": listing(search_filters(changed_since_block=changed_block)),
            "export_changed_s": lambda: export_page(session, at=at, policy=policy, limit=10_000,
                                                    changed_since_block=changed_block),
            "export_changed_and_lapsed_s": lambda: export_page(session, at=at, policy=policy, limit=10_000,
                                                               changed_since_block=changed_block,
                                                               changed_since_time=at - 86_400),
        }
        result: dict[str, Any] = {"records": records, "page": PAGE, "store": node.store.engine.dialect.name}
        for name, run in cases.items():
            result[name] = round(median_s(run, repeat), 4)
            print(f"{name:28} {result[name] * 1000:9.1f} ms")
        found = {name: len(search_page(session, search, at=at, policy=policy, mirror=mirror, limit=PAGE).states)
                 for name, search in (("disputed", search_filters(state="disputed")),
                                      ("changed", search_filters(changed_since_block=changed_block)))}
        print(f"a disputed page holds {found['disputed']}, a changed page {found['changed']} indicators")
        result["list_unfiltered_ratio_to_export_page_100"] = round(result["list_unfiltered_s"]
                                                                   / result["export_page_100_s"], 2)
    emit(result)


if __name__ == "__main__":
    main()
