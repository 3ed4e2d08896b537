"""ABS asset factory: select booked loans into a pool by eligibility criteria and hand them to the pool builder.

Eligibility (`[abs]` of the credit policy), in this order:
1. status in `eligible_statuses` (default: current) and no arrears; not in the latest anchored version of
   another of the bank's pools;
2. no fraud: the bank has not confirmed fraud on the loan's application, and none of the borrower's indicators
   (any key epoch) is an active ledger indicator;
3. concentration limits: no borrower above `max_borrower_share` and no province (of the resident ID) above
   `max_region_share` of the pool's principal. While a group is over its limit, its largest loan is left out
   (the group furthest over first), so the result is deterministic.
Every loan left out is listed with its reason. The selection becomes a loan tape (the borrower's resident ID
and phone are unsealed only into that in-memory tape, which node.assets hashes at once) and a draft version
of the named pool (`node.assets.pools.import_lines`); `anchor=True` also screens and anchors it on chain
(`anchor_draft`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import csv
import heapq
import io
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from node.assets.loan_tape import MAX_LOAN_REFERENCE, MAX_RATE_MICROS, SUPPORTED_CURRENCIES
from node.errors import InvalidInput
from node.extensions.hookspecs import hookimpl
from node.ledger.checks import ledger_address, state_policy
from node.ledger.indicator_state import derive_state
from node.ledger.mirror import facts_for, mirror_status
from node.modules.credit_platform import refresh_borrower_indicators, unseal_applicant
from node.modules.policy import policy_for
from node.modules.selection_snapshots import SNAPSHOT_ID_LENGTH, SnapshotGone, is_snapshot_id, snapshots_of
from node.store.application_tables import BookedLoanRow, BorrowerIndicator, LoanApplication
from node.store.asset_tables import AssetLoan, AssetPool, AssetVersion
from node.store.ledger_tables import MirrorRecord

NAME = "abs_factory"
# Loans per page of GET /v1/abs-factory/eligible: every booked loan the bank ever made has a verdict (repaid ones
# stay excluded for good), so the answer grows with the bank's lending.
DEFAULT_ELIGIBLE_PAGE = 1_000
MAX_ELIGIBLE_PAGE = 10_000
TAPE_COLUMNS = ("loan_reference", "origination_date", "maturity_date", "original_principal", "current_principal",
                "currency", "interest_rate", "purpose", "amortisation_type", "status", "arrears_balance",
                "borrower_resident_id", "borrower_phone")


@dataclass
class PoolSelection:
    selected: list[str] = field(default_factory=list)  # loan references
    excluded: dict[str, str] = field(default_factory=dict)  # loan reference -> reason
    total_principal_minor: int = 0
    draft: dict[str, Any] | None = None
    anchored: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"selected": self.selected, "excluded": self.excluded,
                "total_principal": _major(self.total_principal_minor), "draft": self.draft,
                "anchored": self.anchored}


@hookimpl
def alliance_api_routers() -> list[Any]:
    from node.api.routes.applications import abs_factory_router

    return [abs_factory_router]


# The columns of a booked loan that selection and the loan tape read: the book is read as plain rows, since ORM
# entities for a mid-sized bank's 100,000 loans took most of a selection's 8 s and 550 MB.
_LOAN_COLUMNS = (BookedLoanRow.id, BookedLoanRow.loan_reference, BookedLoanRow.application_id,
                 BookedLoanRow.applicant_fingerprint, BookedLoanRow.region_code, BookedLoanRow.principal_minor,
                 BookedLoanRow.current_principal_minor, BookedLoanRow.arrears_minor, BookedLoanRow.currency,
                 BookedLoanRow.annual_rate_micros, BookedLoanRow.purpose, BookedLoanRow.origination_date,
                 BookedLoanRow.maturity_date, BookedLoanRow.status)


def select_loans(node: Any, pool_name: str | None = None) -> tuple[PoolSelection, list[Any]]:
    """The loans a pool would take now (`pool_name`: which pool; loans anchored in it may stay in it), as rows of
    `_LOAN_COLUMNS`."""
    rules = policy_for(node).abs
    refresh_borrower_indicators(node)
    selection = PoolSelection()
    with node.store.session() as session:
        loans = list(session.execute(select(*_LOAN_COLUMNS).order_by(BookedLoanRow.loan_reference)))
        facts = _book_facts(session, node.settings.bank_code, pool_name)
        blacklisted = _blacklisted_loans(node, session)
    eligible = []
    for loan in loans:
        if reason := _exclusion(loan, rules, facts, blacklisted=lambda loan: loan.id in blacklisted):
            selection.excluded[loan.loan_reference] = reason
        else:
            eligible.append(loan)
    chosen = _within_concentration(eligible, float(rules["max_borrower_share"]), float(rules["max_region_share"]),
                                   selection.excluded)
    selection.selected = [loan.loan_reference for loan in chosen]
    selection.total_principal_minor = sum(loan.current_principal_minor for loan in chosen)
    return selection, chosen


@dataclass(frozen=True)
class BookFacts:
    """What the store says of the book beyond each loan's own row, for `_exclusion`."""

    pooled: set[str]  # loan references anchored in another pool
    confirmed_fraud: set[str]  # application ids
    erased: set[str]  # application ids of booked loans whose applicant retention erased


def _book_facts(session: Any, originator_code: str, pool_name: str | None) -> BookFacts:
    return BookFacts(
        pooled=_pooled_elsewhere(session, originator_code, pool_name),
        # The bank's own confirmations count at once, not only once its report is published and mirrored back.
        confirmed_fraud=set(session.scalars(select(LoanApplication.application_id).where(
            LoanApplication.fraud_report_id.is_not(None)))),
        # Retention erases a borrower only once the policy takes no loan of that status; one it takes again since
        # (a changed policy, a status corrected back) has no identifiers for the tape.
        erased=set(session.scalars(select(BookedLoanRow.application_id).join(
            LoanApplication, LoanApplication.application_id == BookedLoanRow.application_id)
            .where(LoanApplication.sealed_applicant.is_(None)))))


def _exclusion(loan: Any, rules: dict[str, Any], facts: BookFacts, *, blacklisted: Callable[[Any], bool]) -> str | None:
    """Why a pool may not take `loan` whatever the other loans are (None: it may, within the concentration limits)."""
    if unfit := _unfit_for_tape(loan, rules["currency"].upper()):
        return unfit
    if loan.status not in rules["eligible_statuses"] or loan.arrears_minor > 0:
        return "arrears" if loan.arrears_minor > 0 else f"status_{loan.status}"
    if loan.application_id in facts.erased:
        return "applicant_erased"
    if loan.loan_reference in facts.pooled:
        return "in_another_pool"
    if loan.application_id in facts.confirmed_fraud:
        return "fraud_confirmed"
    if blacklisted(loan):
        return "blacklisted_borrower"
    return None


def _blacklisted_loans(node: Any, session: Any) -> set[int]:
    """Ids of the loans with a borrower indicator (any key epoch) that is an active ledger indicator now.

    Only the borrower indicators the mirror holds records of are read, and each one's state is derived once: reading
    every borrower indicator (four a loan a key epoch) and looking each up in the mirror took seconds a selection,
    and nearly none of them is there. An indicator with reactions and no record is never active."""
    loans_of: dict[bytes, list[int]] = defaultdict(list)
    for loan_ref, indicator in session.execute(select(BorrowerIndicator.loan_ref, BorrowerIndicator.indicator)
                                               .where(BorrowerIndicator.indicator.in_(select(MirrorRecord.indicator)))):
        loans_of[bytes(indicator)].append(loan_ref)
    facts = facts_for(session, list(loans_of), reactions_without_records=False)
    now, policy = int(time.time()), state_policy(node)
    return {loan_ref for indicator, refs in loans_of.items() if indicator in facts
            and derive_state(indicator, *facts[indicator], at=now, policy=policy).active for loan_ref in refs}


@dataclass(frozen=True)
class EligiblePage:
    """One page of `select_loans`' verdicts; `next_after` continues while more follow."""

    answer: dict[str, Any]
    next_after: str | None


@dataclass(frozen=True)
class _Verdicts:
    """A selection's verdicts as a page snapshot keeps them: every loan once, in the order the pages list them."""

    references: list[str]  # by code point, alike on every store
    reasons: list[str | None]  # why each loan is left out; None: selected
    total_principal_minor: int
    as_of_block: int  # the ledger mirror's last block when the selection began (-1 before the first sync)


def eligible_page(node: Any, *, after: str | None = None, limit: int = DEFAULT_ELIGIBLE_PAGE) -> EligiblePage:
    """The verdicts of at most `limit` loans, in reference order: from the first without `after`, else from the one
    after the cursor's reference. The first page makes the selection over every loan (concentration limits weigh the
    whole pool, so `total_principal` is the whole selection's) and, while more pages follow, keeps it as a snapshot
    (node.modules.selection_snapshots) that the cursor names: the later pages are that selection's, however the book
    changed since. A snapshot no longer held is `cursor_expired` (410), as is a cursor from before snapshots."""
    if after is None:
        taken_at, verdicts = datetime.now(UTC), _verdicts_now(node)
        kept = snapshots_of(node).keep(taken_at, verdicts) if len(verdicts.references) > limit else None
        snapshot_id, start = (kept.id if kept else None), 0
    else:
        snapshot_id, last = _parse_cursor(after)
        snapshot = snapshots_of(node).get(snapshot_id)
        taken_at, verdicts = snapshot.taken_at, snapshot.content
        start = bisect.bisect_right(verdicts.references, last)
    end = min(start + limit, len(verdicts.references))
    page = range(start, end)
    answer = {"selected": [verdicts.references[i] for i in page if verdicts.reasons[i] is None],
              "excluded": {verdicts.references[i]: reason for i in page
                           if (reason := verdicts.reasons[i]) is not None},
              "total_principal": _major(verdicts.total_principal_minor), "draft": None, "anchored": None,
              "snapshot_id": snapshot_id, "as_of": taken_at.isoformat(), "as_of_block": verdicts.as_of_block}
    next_after = (f"{snapshot_id}.{_cursor_of_reference(verdicts.references[end - 1])}"
                  if end < len(verdicts.references) else None)
    return EligiblePage(answer, next_after)


def _verdicts_now(node: Any) -> _Verdicts:
    with node.store.session() as session:
        block = mirror_status(session, ledger_address(node),
                              stale_after_s=node.settings.mirror_stale_after_s).as_of_block
    selection, _ = select_loans(node)
    references = sorted((*selection.selected, *selection.excluded))
    return _Verdicts(references, [selection.excluded.get(r) for r in references], selection.total_principal_minor,
                     block)


# A cursor is the snapshot's id, ".", and the page's last reference: its UTF-8 in unpadded URL-safe base64, since the
# cursor travels in an HTTP header, which takes Latin-1 only, and a loan reference may hold any printable text. A
# reference in base64 (MAX_LOAN_REFERENCE characters, up to 4 UTF-8 bytes each) never holds a ".".
MAX_ELIGIBLE_CURSOR = SNAPSHOT_ID_LENGTH + 1 + 4 * (4 * MAX_LOAN_REFERENCE + 2) // 3


def _parse_cursor(cursor: str) -> tuple[str, str]:
    """The snapshot id and the reference of a cursor `eligible_page` gave."""
    snapshot_id, dot, reference = cursor.partition(".")
    if not dot:
        # A plain reference: the cursor of a page made before snapshots, its selection held nowhere. Continuing it
        # from a new selection would mix the two.
        _reference_of_cursor(cursor)
        raise SnapshotGone("after: a cursor from before page snapshots continues no listing held; start again from "
                           "the first page, without after")
    if not is_snapshot_id(snapshot_id):
        raise _invalid_cursor()
    return snapshot_id, _reference_of_cursor(reference)


def _cursor_of_reference(reference: str) -> str:
    return base64.urlsafe_b64encode(reference.encode()).decode("ascii").rstrip("=")


def _reference_of_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise _invalid_cursor() from None


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("after: not a cursor this list gave (X-Next-After)", code="invalid_cursor")


def _unfit_for_tape(loan: Any, currency: str) -> str | None:
    """Why the loan tape would refuse the loan's row in a pool of `currency`, if it would: every pool was refused
    whole for one such loan (applications take any currency and rates up to 100,000 %; a tape takes one currency,
    rates up to 100 % and amounts in the currency's minor unit)."""
    if loan.currency.upper() != currency:
        return "other_currency"
    if loan.annual_rate_micros > MAX_RATE_MICROS:
        return "rate_out_of_range"
    # Booked amounts are kept in hundredths; a currency with fewer decimals (JPY: none) takes whole units only.
    step = 10 ** (2 - SUPPORTED_CURRENCIES[currency])
    if any(amount % step for amount in (loan.principal_minor, loan.current_principal_minor, loan.arrears_minor)):
        return "amount_precision"
    return None


def _pooled_elsewhere(session: Any, originator_code: str, pool_name: str | None) -> set[str]:
    """References of this bank's loans in the latest anchored version of a pool other than `pool_name`: taking
    one again would finance it twice, and anchoring the pool is refused for it (after its draft was stored)."""
    latest = (select(AssetVersion.pool_ref, func.max(AssetVersion.version).label("version"))
              .where(AssetVersion.state == "anchored").group_by(AssetVersion.pool_ref).subquery())
    query = (select(AssetLoan.loan_reference)
             .join(AssetVersion, AssetVersion.id == AssetLoan.version_ref)
             .join(latest, (latest.c.pool_ref == AssetVersion.pool_ref) & (latest.c.version == AssetVersion.version))
             .join(AssetPool, AssetPool.id == AssetVersion.pool_ref)
             .where(AssetLoan.originator_code == originator_code))
    if pool_name is not None:
        query = query.where(AssetPool.name != pool_name)
    return set(session.scalars(query))


def _within_concentration(loans: list[Any], borrower_share: float, region_share: float,
                          excluded: dict[str, str]) -> list[Any]:
    # Greedy: while a group is over its limit, the largest loan of the group furthest over goes (ties: the borrower
    # limit first, then the group whose first loan comes first). Rescanning every loan for each one left out took
    # hours for a regional bank's book (100,000 loans, 90 % of them in its home province: 75,000 left out); group
    # totals are kept up to date instead, and each limit's largest group is found in a heap.
    # Each loan's principal and reference are read once: 100,000 reads of a row's fields per sort key and sum cost
    # more than the rest of the selection.
    amounts = [loan.current_principal_minor for loan in loans]
    keys = list(zip(amounts, [loan.loan_reference for loan in loans], strict=True))
    by_size = sorted(range(len(loans)), key=keys.__getitem__, reverse=True)  # of equal ones, the first first
    left = [True] * len(loans)
    total = sum(amounts)
    limits = [_Groups("concentration_borrower", borrower_share, [_borrower(x) for x in loans], amounts, by_size, left),
              _Groups("concentration_region", region_share, [x.region_code for x in loans], amounts, by_size, left)]
    while total:  # loans paid down to nothing (not yet marked repaid): no share of nothing is over a limit
        worst: tuple[float, _Groups, int] | None = None
        for groups in limits:
            group = groups.largest_group()
            if group is None:
                continue
            excess = groups.amount[group] / total - groups.limit
            if excess > 1e-12 and (worst is None or excess > worst[0]):
                worst = (excess, groups, group)
        if worst is None:
            break
        _, groups, group = worst
        position = groups.largest_loan(group)
        left[position] = False
        total -= amounts[position]
        for each in limits:
            each.leave(position)
        excluded[loans[position].loan_reference] = groups.label
    return [loan for loan, kept in zip(loans, left, strict=True) if kept]


def _borrower(loan: Any) -> bytes:
    assert loan.applicant_fingerprint is not None  # an erased applicant's loan is left out before (applicant_erased)
    return bytes(loan.applicant_fingerprint)


class _Groups:
    """The loans still chosen grouped by one concentration key (a borrower, a province), with each group's
    principal. Loans leave and never come back, so each group's lists are walked forward past the ones gone."""

    def __init__(self, label: str, limit: float, keys: list[Any], amounts: list[int], by_size: list[int],
                 left: list[bool]) -> None:
        """`amounts`: each loan's principal; `by_size`: the loans' positions, largest (then last reference) first."""
        self.label, self.limit, self._amounts, self._left = label, limit, amounts, left
        index: dict[Any, int] = {}
        self._group_of = [index.setdefault(key, len(index)) for key in keys]
        self._members: list[list[int]] = [[] for _ in index]  # positions, in the loans' order
        self.amount = [0] * len(index)
        for position, group in enumerate(self._group_of):
            self._members[group].append(position)
            self.amount[group] += amounts[position]
        self._by_size: list[list[int]] = [[] for _ in index]
        for position in by_size:
            self._by_size[self._group_of[position]].append(position)
        # How far each group's members, and its loans by size, are walked past the loans gone.
        self._first = [0] * len(index)
        self._next_largest = [0] * len(index)
        # (-principal, first position still chosen, group): the largest group first, of equal ones the one whose
        # first loan comes first, as the groups would be met walking the loans. Entries go stale as loans leave.
        self._heap = [(-self.amount[g], self._first_member(g), g) for g in range(len(index))]
        heapq.heapify(self._heap)

    def largest_group(self) -> int | None:
        while self._heap:
            amount, first, group = self._heap[0]
            if first >= 0 and -amount == self.amount[group] and first == self._first_member(group):
                return group
            heapq.heappop(self._heap)
        return None

    def largest_loan(self, group: int) -> int:
        by_size = self._by_size[group]
        while not self._left[by_size[self._next_largest[group]]]:
            self._next_largest[group] += 1
        return by_size[self._next_largest[group]]

    def leave(self, position: int) -> None:
        group = self._group_of[position]
        self.amount[group] -= self._amounts[position]
        first = self._first_member(group)
        if first >= 0:
            heapq.heappush(self._heap, (-self.amount[group], first, group))

    def _first_member(self, group: int) -> int:
        """The position of the group's first loan still chosen; -1 when none is."""
        members = self._members[group]
        while self._first[group] < len(members) and not self._left[members[self._first[group]]]:
            self._first[group] += 1
        return members[self._first[group]] if self._first[group] < len(members) else -1


def build_pool(node: Any, pool_name: str, *, anchor: bool = False, override_reason: str | None = None
               ) -> PoolSelection:
    """Select eligible loans and import them as the draft of `pool_name` (and anchor it if asked)."""
    from node.assets.pools import anchor_draft, import_lines, valid_override_reason, valid_pool_name

    # Checked before the draft is stored: a reason refused only at anchoring would leave the draft behind.
    name, reason = valid_pool_name(pool_name), valid_override_reason(override_reason)
    selection, chosen = select_loans(node, name)
    if not chosen:
        raise InvalidInput("no booked loan is eligible for a pool", code="no_eligible_loans",
                           details=[{"loan_reference": k, "reason": v} for k, v in selection.excluded.items()])
    rules = policy_for(node).abs
    selection.draft = import_lines(node, name, _tape_lines(node, chosen, rules)).to_json()
    if anchor:
        selection.anchored = anchor_draft(node, name, override_reason=reason).to_json()
    return selection


def _tape_lines(node: Any, loans: list[Any], rules: dict[str, Any]) -> list[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TAPE_COLUMNS)
    with node.store.session() as session:
        for loan in loans:
            applicant = unseal_applicant(node, session.get_one(LoanApplication, loan.application_id))
            writer.writerow([loan.loan_reference, loan.origination_date, loan.maturity_date,
                             _major(loan.principal_minor), _major(loan.current_principal_minor), loan.currency,
                             str(Decimal(loan.annual_rate_micros) / 10_000), loan.purpose or rules["purpose"],
                             rules["amortisation_type"], loan.status, _major(loan.arrears_minor),
                             applicant.cn_resident_id, applicant.phone])
    # Lines as csv wrote them: str.splitlines also breaks at \x0c, \x85, \u2028 and others, which a resident ID
    # or phone may hold between its digits as typed (normalisation drops them as spaces), and cut that loan's row.
    return list(io.StringIO(out.getvalue(), newline=""))


def _major(minor: int) -> str:
    return str(Decimal(minor) / 100)
