"""Reactions to indicators: endorse or dispute another bank's indicator; confirm or withdraw this bank's reports.

These are direct contract calls answered once mined, not queued like reports: a caller learns at once that
the chain is down (HTTP 503) and retries. Sending one twice is harmless to every node's derived state (only a
member's latest endorsement counts, a confirmation answers every earlier dispute, a revocation is a set), and
withdrawal skips records the mirror already shows revoked.

Withdrawing a report marks it withdrawn locally *before* anything is sent, so a crash half-way can never let
`alliance ledger republish` resurrect it; running the withdrawal again finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from node.chain.client import Receipt
from node.chain.errors import ChainUnavailable, TransactionTimeout
from node.errors import Conflict, InvalidInput, NotFound
from node.hex_input import hex32
from node.ledger.reports import get_report
from node.ledger.vocabulary import MAX_CONFIDENCE, DisputeReason, RevokeReason
from node.runtime import NodeContext
from node.store.ledger_tables import (
    FraudReport,
    MirrorReaction,
    MirrorRecord,
    OutboxRecord,
    PublishBatch,
    accepted,
)
from node.store.models import utcnow
from node.text import quoted


@dataclass(frozen=True)
class ReactionSent:
    kind: str  # endorsed | disputed | confirmed | revoked
    indicator: str
    batch_id: int | None
    tx_hash: str
    block_number: int


def parse_indicator(text: str) -> bytes:
    """An indicator written as 64 hex digits, optionally after 0x."""
    indicator = hex32(text.strip())
    if indicator is None:
        raise InvalidInput("an indicator is 32 bytes as 64 hex digits, optionally after 0x", code="invalid_indicator")
    return indicator


def endorse_indicator(node: NodeContext, indicator: bytes, confidence: int) -> ReactionSent:
    """Corroborate another bank's indicator with this bank's own confidence."""
    if not 0 <= confidence <= MAX_CONFIDENCE:
        raise InvalidInput(f"confidence must be 0..{MAX_CONFIDENCE}", code="invalid_confidence")
    _refuse_own_indicator(node, indicator, "endorse")
    _require_mirrored(node, indicator)
    receipt = node.fraud_ledger(signing=True).endorse(indicator, confidence)
    return _sent("endorsed", indicator, None, receipt)


def dispute_indicator(node: NodeContext, indicator: bytes, reason: str) -> ReactionSent:
    """Dispute another bank's indicator; unless its reporter confirms or revokes within the window, it stops producing
    hits."""
    code = _reason(DisputeReason, reason)
    _refuse_own_indicator(node, indicator, "dispute")
    _require_mirrored(node, indicator)
    receipt = node.fraud_ledger(signing=True).dispute(indicator, code)
    return _sent("disputed", indicator, None, receipt)


def confirm_report(node: NodeContext, report_id: str) -> list[ReactionSent]:
    """Confirm every published record of this bank's report: the answer to disputes against it."""
    ledger = node.fraud_ledger(signing=True)
    return [_sent("confirmed", indicator, batch_id, ledger.confirm(batch_id, indicator))
            for batch_id, indicator in _published_records(node, report_id)]


def withdraw_report(node: NodeContext, report_id: str, reason: str) -> list[ReactionSent]:
    """Revoke every published record of this bank's report and stop its queued ones from being published."""
    code = _reason(RevokeReason, reason)
    with node.store.transaction() as session:
        get_report(session, report_id)
        # Written first, looked at after: a publisher claims records only while they are still queued, so either its
        # claim was committed before these writes and is found below, or it finds the records withdrawn (looking
        # first let a claim slip in between, and the claimed records were published and never revoked).
        session.execute(update(FraudReport).where(FraudReport.report_id == report_id,
                                                  FraudReport.withdrawn_at.is_(None)).values(withdrawn_at=utcnow()))
        session.execute(update(OutboxRecord).where(OutboxRecord.report_id == report_id,
                                                   OutboxRecord.state == "queued").values(state="withdrawn"))
        if session.scalars(select(OutboxRecord.id).where(OutboxRecord.report_id == report_id,
                                                         OutboxRecord.state == "batched")).first() is not None:
            raise Conflict(f"report {report_id} is being published right now; withdraw it once it is confirmed",
                           code="publication_in_progress")
    try:
        ledger = node.fraud_ledger(signing=True)
        revoked = _already_revoked(node)
        return [_sent("revoked", indicator, batch_id, ledger.revoke(batch_id, indicator, code))
                for batch_id, indicator in _published_records(node, report_id)
                if (batch_id, indicator) not in revoked]
    except (ChainUnavailable, TransactionTimeout) as exc:
        # The withdrawal is recorded whatever the chain does (queued records are never published), but revocations
        # are sent only here: the caller must know that, and that running it again sends the rest.
        raise type(exc)(f"report {report_id} is withdrawn and none of its queued records will be published, but its "
                        f"published records may not all be revoked ({exc}): withdraw it again once the chain "
                        "answers") from exc


def _published_records(node: NodeContext, report_id: str) -> list[tuple[int, bytes]]:
    with node.store.session() as session:
        get_report(session, report_id)
        rows = session.execute(
            select(PublishBatch.onchain_batch_id, OutboxRecord.indicator)
            .join(PublishBatch, OutboxRecord.publish_batch_id == PublishBatch.id)
            .where(OutboxRecord.report_id == report_id, OutboxRecord.state == "confirmed")
            .order_by(OutboxRecord.id)).all()
    return [(int(batch_id), bytes(indicator)) for batch_id, indicator in rows if batch_id is not None]


def _already_revoked(node: NodeContext) -> set[tuple[int, bytes]]:
    member_id = node.member_id
    with node.store.session() as session:
        rows = session.execute(select(MirrorReaction.batch_id, MirrorReaction.indicator).where(
            MirrorReaction.kind == "revoked", MirrorReaction.member_id == member_id)).all()
    return {(int(batch_id), bytes(indicator)) for batch_id, indicator in rows if batch_id is not None}


def _refuse_own_indicator(node: NodeContext, indicator: bytes, verb: str) -> None:
    """Refuse to endorse or dispute an indicator this bank reports itself: every node's derived state ignores such a
    reaction (docs/fraud-ledger.md, Own reactions), and the contract cannot refuse it: it never sees the records."""
    own = _own_report_of(node, indicator)
    if own is not None:
        source, advice = own
        raise Conflict(f"this bank reports this indicator itself ({source}), so it cannot {verb} it: endorsing and "
                       f"disputing are other members' word on a report; {advice}", code="own_indicator")


def _own_report_of(node: NodeContext, indicator: bytes) -> tuple[str, str] | None:
    """What makes this bank a reporter of `indicator`, and what to do about it; None if nothing does. One of its
    records on chain and not revoked (as the mirror shows it, or the outbox until the mirror catches up), or one queued
    or being published.

    A withdrawn report whose records are revoked does not count: the bank no longer reports the indicator, and
    disputing another bank's record of it (its customer was cleared, say) is what it may then want to do. One
    withdrawn whose revocations the mirror does not show yet still counts: sent while the chain was down, they may
    never have reached it, and on chain the record still stands."""
    member_id = node.member_id
    with node.store.session() as session:
        revoked = {int(batch_id) for batch_id in session.scalars(select(MirrorReaction.batch_id).where(
            MirrorReaction.kind == "revoked", MirrorReaction.member_id == member_id,
            MirrorReaction.indicator == indicator)) if batch_id is not None}
        outbox = session.execute(
            select(OutboxRecord.report_id, OutboxRecord.state, PublishBatch.onchain_batch_id, FraudReport.withdrawn_at)
            .join(FraudReport, FraudReport.report_id == OutboxRecord.report_id)
            .outerjoin(PublishBatch, OutboxRecord.publish_batch_id == PublishBatch.id)
            .where(OutboxRecord.indicator == indicator, OutboxRecord.state != "withdrawn",
                   accepted(OutboxRecord.import_id))
            .order_by(OutboxRecord.id)).all()
        mirrored = session.scalars(select(MirrorRecord.batch_id).where(
            MirrorRecord.indicator == indicator, MirrorRecord.reporter_member_id == member_id)).all()
    for report_id, state, batch_id, withdrawn_at in outbox:
        if state == "confirmed" and (batch_id is None or int(batch_id) in revoked):
            continue
        if withdrawn_at is not None:
            return (f"report {report_id}, withdrawn", "this node's mirror shows no revocation of it yet: sync the "
                    "ledger (`alliance ledger sync`), or withdraw it again if the chain was down")
        return f"report {report_id}", "withdraw the report if it is wrong"
    if any(int(batch_id) not in revoked for batch_id in mirrored):
        return ("a record on chain that this node's store does not hold",
                "withdraw it, if it is wrong, from the store that holds its report")
    return None


def _require_mirrored(node: NodeContext, indicator: bytes) -> None:
    with node.store.session() as session:
        if session.scalars(select(MirrorRecord.id).where(MirrorRecord.indicator == indicator)).first() is None:
            raise NotFound("no such indicator in this node's mirror (sync it, or check the hash)",
                           code="unknown_indicator")


def _reason(vocabulary: type[DisputeReason] | type[RevokeReason], name: str) -> int:
    try:
        return int(vocabulary[name])
    except KeyError:
        raise InvalidInput(f"unknown reason {quoted(name)}; one of {', '.join(r.name for r in vocabulary)}",
                           code="unknown_reason") from None


def _sent(kind: str, indicator: bytes, batch_id: int | None, receipt: Receipt) -> ReactionSent:
    return ReactionSent(kind, "0x" + indicator.hex(), batch_id, receipt.tx_hash, receipt.block_number)
