"""The publisher: takes queued outbox records, publishes them in batches, and records where they landed.

Every step is durable before the next one starts, so a crash anywhere loses nothing and publishes
nothing twice:

1. *prepare*: in one store transaction, the oldest queued records of one epoch are claimed (moved to
   `batched` only if still queued, so a second publisher on the same store cannot take them too), the
   publishBatch transaction is signed, and the signed bytes, their hash and nonce are stored with the
   batch (state `signed`);
2. *send*: the stored bytes are broadcast;
3. *finish*: the receipt is awaited and the batch and its records become `confirmed` with the
   transaction hash, block and on-chain batch id.

On start (and every round) `recover` settles batches left `signed`: a mined transaction is finished;
a root that this member already has on chain (published by an earlier copy) is finished from the
contract's root index (another member's batch of the same root is not ours); a transaction signed with a key the
bank has replaced since (a running node takes up an activated key, node.signer_switch), which the chain refuses, has
its records queued again if it was mined, and is signed again with the current key if not, once the old key has no
transaction left in the pool (until then the round stops there); an unsent transaction is
sent again with the same bytes, or re-signed with a fresh nonce if its nonce was used by another
transaction or lies beyond the chain's next nonce (a chain that went back lost the transactions below it,
and the stored one would wait behind that gap forever). The contract refuses a root the member has
published (FraudLedgerDuplicateBatch), so even a resend of a batch that did land records nothing twice.

The first round of a publisher (and the first after the chain was unreachable, and every round with records
to publish) also checks that the chain still has the batches the store holds as confirmed, newest first, until
it finds one: a chain that came back
from an older state (a dev chain killed with -9 restarts from its last state file) lost them, and their
records are queued again (their batch `failed`, with the reason, until they are published again) and an
error is logged. Nothing is concluded while the RPC node says it is still syncing (`eth_syncing`): a node
catching up lacks recent batches only for now, and publishing their records again would record them twice.

The other way round, a store behind the chain: restored from a backup, it holds as queued records that its
node published after the backup was taken. Before its first batch, a publisher looks for this member's batches
newer than the store's newest confirmed one, and queued records that one of them holds are confirmed as
published there (`adopt_published_elsewhere`), not published a second time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from node.chain.client import nonce_taken
from node.chain.errors import ChainError, ChainUnavailable, ContractRevert, TransactionTimeout
from node.chain.fraud_ledger import FraudLedgerClient, LedgerRecord, MinedPublish, OwnBatch, batch_root
from node.store.bulk import in_list_slices
from node.store.db import Store
from node.store.ledger_tables import FraudReport, OutboxRecord, PublishBatch, accepted
from node.store.models import as_utc, utcnow

logger = logging.getLogger(__name__)

FAILURE_BACKOFF_S = 30.0
_UNPUBLISHED = ("queued", "batched")  # outbox states on their way to the chain; the others are confirmed or withdrawn


class _PublishedMeanwhile(Exception):
    """The chain has a batch that looked lost: another publisher published it again meanwhile."""


class _ClaimLost(Exception):
    """Another publisher claimed some of the queued records this one read."""


@dataclass(frozen=True)
class PreparedBatch:
    batch_row_id: int
    root: bytes
    raw_tx: bytes
    tx_hash: str
    record_count: int


@dataclass(frozen=True)
class PublishRound:
    batches: int
    records: int
    recovered: int


class Publisher:
    def __init__(self, store: Store, ledger: FraudLedgerClient, *, batch_size: int, max_wait_s: float) -> None:
        self._store = store
        self._ledger = ledger
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._paused_until = 0.0
        self._chain_checked = False
        self._adopted = False
        self.last_error: str | None = None

    def run_once(self, *, flush: bool = False) -> PublishRound:
        """Settle unfinished batches, then publish every batch that is ready (all queued ones if `flush`)."""
        if time.monotonic() < self._paused_until:
            return PublishRound(0, 0, 0)
        try:
            # Also before every round that has records to publish: a chain that went back between two rounds
            # answers them as if nothing happened (an idle round asks it nothing), and once a newer batch lands,
            # the check, newest first, stops there and never reaches the batches the chain lost.
            if not self._chain_checked or self._has_unpublished():
                self._chain_checked = self.requeue_lost_batches() is not None
                if self._chain_checked and not self._adopted:
                    self.adopt_published_elsewhere()
                    self._adopted = True
            return self._publish(flush=flush)
        except ChainUnavailable:
            self._chain_checked = False  # the chain that comes back may be an older copy
            raise

    def _publish(self, *, flush: bool) -> PublishRound:
        recovered = self.recover()
        batches = records = 0
        while (prepared := self._prepare(flush=flush)) is not None:
            self._send(prepared)
            self._finish(prepared.batch_row_id)
            batches += 1
            records += prepared.record_count
        self.last_error = None
        return PublishRound(batches, records, recovered)

    def drain(self, *, timeout_s: float = 60.0) -> PublishRound:
        """Publish until nothing is queued or unfinished (for the CLI and tests)."""
        deadline = time.monotonic() + timeout_s
        total = PublishRound(0, 0, 0)
        while True:
            done = self.run_once(flush=True)
            total = PublishRound(total.batches + done.batches, total.records + done.records,
                                 total.recovered + done.recovered)
            if self.pending() == 0:
                return total
            if time.monotonic() > deadline:
                raise TransactionTimeout(f"{self.pending()} records still unpublished after {timeout_s}s")
            time.sleep(0.05)

    def pending(self) -> int:
        """Records still to publish: queued, or in a batch not yet confirmed (those of imports not complete are not
        the publisher's yet). A withdrawn report's queued records never will be: counted, they kept `drain` (`alliance
        fraud publish`) waiting its minute and failing, for good, once a report was withdrawn before publication."""
        with self._store.session() as session:
            return session.scalar(select(func.count()).select_from(OutboxRecord)
                                  .where(OutboxRecord.state.in_(_UNPUBLISHED), accepted(OutboxRecord.import_id))) or 0

    def _has_unpublished(self) -> bool:
        with self._store.session() as session:
            return session.scalar(select(OutboxRecord.id).where(OutboxRecord.state.in_(_UNPUBLISHED),
                                                                accepted(OutboxRecord.import_id))
                                  .limit(1)) is not None

    # -- recovery -------------------------------------------------------------------------------------
    def requeue_lost_batches(self) -> int | None:
        """Queue again the records of the newest confirmed batches the chain does not have; returns how many
        batches were lost, or None if the RPC node is still syncing (it may only lag: nothing is concluded) or the
        signing key is no member's (rotated away: nothing can be looked up by it).
        A chain loses only its newest blocks, so the walk stops at the first batch it has."""
        if self._ledger.chain.is_syncing():
            return None
        # The chain indexes batches by member; a key the members rotated away from (the running node signs with
        # it until restarted with the new one) belongs to no member, and under member 0 every batch looked lost:
        # its published records were queued again, shown unpublished, and a withdrawal revoked none of them.
        reporter = self._ledger.reporter_member_id()
        if reporter == 0:
            return None
        lost = 0
        while (newest := self._newest_confirmed()) is not None:
            batch_row_id, root, block_number = newest
            if self._ledger.batch_id_of_root(root, reporter) != 0:
                break
            if self._requeue_lost(batch_row_id, root, reporter,
                                  f"lost from the chain (was confirmed in block {block_number})"):
                # The chain lost this member's transaction of the batch: the local nonce count is ahead of it.
                self._ledger.chain.nonces.reset()
                logger.error("batch %s, confirmed in block %s, is not on the chain: the chain is behind this node's "
                             "store (a dev chain restored from an older state?); its records are queued again",
                             batch_row_id, block_number)
                lost += 1
        return lost

    def adopt_published_elsewhere(self) -> int:
        """Confirm the queued records that this member's batches newer than the store's newest confirmed one
        already hold, as published there; returns how many. A store restored from a backup holds as queued the
        records its node published after the backup was taken: published again, they would be on chain twice."""
        with self._store.session() as session:
            if session.scalar(select(OutboxRecord.id).where(OutboxRecord.state == "queued").limit(1)) is None:
                return 0
        newest = self._newest_confirmed()
        since = (newest[2] or 0) if newest is not None else 0  # its block may hold later batches too
        adopted = 0
        for batch in self._ledger.own_batches_since(since):  # usually none, or the newest confirmed one itself
            ids = self._queued_ids_of(batch)
            if ids and self._adopt(batch, ids):
                adopted += len(ids)
                logger.warning("%s queued records are already on chain in batch %s (block %s), published before "
                               "this store was restored from a backup; confirmed there, not published again",
                               len(ids), batch.mined.batch_id, batch.mined.block_number)
        return adopted

    def _queued_ids_of(self, batch: OwnBatch) -> list[int]:
        """The queued outbox rows whose record, every field of it and its epoch, is one of `batch`'s."""
        wanted = set(batch.records)
        indicators = sorted({record.indicator for record in wanted})
        ids: list[int] = []
        with self._store.session() as session:
            for chunk in in_list_slices(indicators):
                rows = session.execute(
                    select(OutboxRecord.id, OutboxRecord.indicator, OutboxRecord.identifier_type,
                           FraudReport.category, FraudReport.confidence, FraudReport.valid_from,
                           FraudReport.valid_until, FraudReport.evidence_hash, FraudReport.case_ref_hash)
                    .join(FraudReport, OutboxRecord.report_id == FraudReport.report_id)
                    .where(OutboxRecord.state == "queued", OutboxRecord.epoch == batch.epoch,
                           OutboxRecord.indicator.in_(chunk), accepted(OutboxRecord.import_id)))
                ids += [row[0] for row in rows if LedgerRecord(*row[1:]) in wanted]
        return ids

    def _adopt(self, batch: OwnBatch, ids: list[int]) -> bool:
        """Record `batch` as confirmed with the outbox rows `ids`, unless another publisher claimed one (False)."""
        fields = {"epoch": batch.epoch, "record_count": len(ids), "state": "confirmed", "nonce": batch.nonce,
                  "tx_hash": batch.mined.tx_hash, "signed_tx": b"", "onchain_batch_id": batch.mined.batch_id,
                  "block_number": batch.mined.block_number, "confirmed_at": utcnow(), "error": None}
        try:
            with self._store.transaction() as session:
                # A failed batch of the same records (refused while the bank was suspended) has the root already.
                row = session.scalars(select(PublishBatch).where(PublishBatch.root == batch.root)).first()
                if row is None:
                    row = PublishBatch(root=batch.root, **fields)
                    session.add(row)
                else:
                    for name, value in fields.items():
                        setattr(row, name, value)
                session.flush()
                claimed = session.execute(update(OutboxRecord).where(OutboxRecord.id.in_(ids),
                                                                     OutboxRecord.state == "queued")
                                          .values(state="confirmed", publish_batch_id=row.id))
                if claimed.rowcount != len(ids):  # type: ignore[attr-defined]
                    raise _ClaimLost
        except _ClaimLost:
            return False
        return True

    def _requeue_lost(self, batch_row_id: int, root: bytes, reporter: int, error: str) -> bool:
        """Queue a lost batch's records again, unless another publisher did first (False).

        Another publisher on the store may have found the same batch lost, requeued it and published its records
        again (the same batch row when the records are the same) since this one looked at the chain. So the batch is
        claimed while still `confirmed`, and the chain asked again with the claim held: only then are its records
        queued, or they would be published twice.
        """
        try:
            with self._store.transaction() as session:
                claimed = session.execute(update(PublishBatch).where(PublishBatch.id == batch_row_id,
                                                                     PublishBatch.state == "confirmed")
                                          .values(state="failed", error=error))
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    return False
                if self._ledger.batch_id_of_root(root, reporter) != 0:
                    raise _PublishedMeanwhile
                _queue_again(session, batch_row_id)
        except _PublishedMeanwhile:
            return False
        return True

    def _newest_confirmed(self) -> tuple[int, bytes, int | None] | None:
        with self._store.session() as session:
            row = session.execute(select(PublishBatch.id, PublishBatch.root, PublishBatch.block_number)
                                  .where(PublishBatch.state == "confirmed")
                                  .order_by(PublishBatch.block_number.desc(), PublishBatch.id.desc()).limit(1)).first()
        return None if row is None else (row[0], bytes(row[1]), row[2])

    def recover(self) -> int:
        """Settle every batch left `signed` by an earlier round or process; returns how many were settled."""
        with self._store.session() as session:
            unfinished = session.scalars(select(PublishBatch.id).where(PublishBatch.state == "signed")
                                         .order_by(PublishBatch.nonce)).all()
        for batch_row_id in unfinished:
            self._settle(batch_row_id)
        return len(unfinished)

    def _settle(self, batch_row_id: int) -> None:
        with self._store.session() as session:
            batch = session.get_one(PublishBatch, batch_row_id)
            root, tx_hash, nonce, raw = batch.root, batch.tx_hash, batch.nonce, batch.signed_tx
        replaced = self._ledger.replaced_sender(raw)
        if self._ledger.receipt_of(tx_hash) is not None:
            self._finish(batch_row_id, replaced_key=replaced is not None)
            return
        found = self._ledger.find_published(root)
        if found is not None:
            self._mark_confirmed(batch_row_id, found)
            return
        if replaced is not None:
            self._resign_replaced(batch_row_id, replaced)
        elif self._ledger.confirmed_nonce() > nonce:
            logger.warning("batch %s: nonce %s was used by another transaction; signing again", batch_row_id, nonce)
            self._resign(batch_row_id)
        elif (expected := self._ledger.pending_nonce()) < nonce:
            # The chain went back (a dev chain restored from an older state) without transactions below this one:
            # sent again, it would wait behind the gap forever. The local nonce count is as stale as the batch's.
            logger.warning("batch %s: nonce %s is beyond the chain's next nonce %s; signing again", batch_row_id,
                           nonce, expected)
            self._ledger.chain.nonces.reset()
            self._resign(batch_row_id)
        else:
            self._ledger.send_raw(raw)
        self._finish(batch_row_id)

    def _resign_replaced(self, batch_row_id: int, sender: str) -> None:
        """Sign again with the current key a batch signed with the key the bank signed with before an activation
        (node.signer_switch), neither mined nor published. The chain takes nothing from that key any more (the
        activation found the rotation passed), and its nonce counts that key's transactions, not this one's. But
        while that key has a transaction in the pool, it may be this batch's, which another publisher (the node's
        worker before it took up the new key, beside an `alliance fraud publish`) is waiting for, and would queue its
        records again once it is refused: the batch is left until then, and nothing else is signed meanwhile."""
        if self._ledger.has_pending(sender):
            raise TransactionTimeout(f"batch {batch_row_id} was signed with the replaced signing key {sender}, which "
                                     "has a transaction not mined yet: the batch is settled once it is")
        logger.info("batch %s: signed with the replaced signing key %s; signing it again with the current one",
                    batch_row_id, sender)
        self._resign(batch_row_id)

    def _resign(self, batch_row_id: int) -> None:
        with self._store.transaction() as session:
            batch = session.get_one(PublishBatch, batch_row_id)
            records = _ledger_records(session, batch_row_id)
            signed = self._ledger.sign_publish(batch.epoch, records, root=batch.root,
                                               nonce=self._ledger.chain.nonces.take())
            batch.signed_tx, batch.tx_hash, batch.nonce = signed.raw, signed.tx_hash, signed.nonce
        self._ledger.send_raw(signed.raw)

    # -- the three steps ------------------------------------------------------------------------------
    def _prepare(self, *, flush: bool) -> PreparedBatch | None:
        try:
            return self._prepare_in_transaction(flush=flush)
        except _ClaimLost:
            logger.info("another publisher took the queued records this one read; leaving them to it")
            return None
        except BaseException:
            # A nonce may have been taken for a transaction that was never stored: forget the local count so
            # the next one is read from the chain, leaving no gap that would stall every later transaction.
            self._ledger.chain.nonces.reset()
            raise

    def _prepare_in_transaction(self, *, flush: bool) -> PreparedBatch | None:
        with self._store.transaction() as session:
            queued = self._queued_rows(session, flush=flush)
            if queued is None:
                return None
            epoch, rows = queued
            ids = [row[0] for row in rows]
            # Claim the rows before signing. Another publisher (the node's worker and `alliance fraud publish`,
            # or a second node process on the same store) may have read the same queued rows; only one claim can
            # still find them all queued, and the loser rolls back before it takes a nonce.
            claimed = session.execute(update(OutboxRecord)
                                      .where(OutboxRecord.id.in_(ids), OutboxRecord.state == "queued")
                                      .values(state="batched"))
            if claimed.rowcount != len(ids):  # type: ignore[attr-defined]
                raise _ClaimLost
            records = [LedgerRecord(*row[1:]) for row in rows]
            root = batch_root(records)
            signed = self._ledger.sign_publish(epoch, records, root=root, nonce=self._ledger.chain.nonces.take())
            batch = session.scalars(select(PublishBatch).where(PublishBatch.root == root)).first()
            if batch is None:
                batch = PublishBatch(epoch=epoch, root=root, record_count=len(records), state="signed",
                                     nonce=signed.nonce, tx_hash=signed.tx_hash, signed_tx=signed.raw)
                session.add(batch)
            else:  # the same records failed before (e.g. while this bank was suspended): a new attempt
                batch.state, batch.nonce, batch.tx_hash, batch.signed_tx = "signed", signed.nonce, signed.tx_hash, \
                    signed.raw
                batch.error = None
            session.flush()
            session.execute(update(OutboxRecord).where(OutboxRecord.id.in_(ids)).values(publish_batch_id=batch.id))
            return PreparedBatch(batch.id, root, signed.raw, signed.tx_hash, len(records))

    def _queued_rows(self, session: Session, *, flush: bool) -> tuple[int, list[tuple[Any, ...]]] | None:
        """The epoch and the (id, leaf values...) rows of the next batch: the oldest queued records of the oldest
        queued record's epoch; None while there is no batch to send yet (too few records, and none of them queued for
        `max_wait_s`). Records of an import still staging are not taken (node.ledger.report_staging).

        The wait counts from when a record entered the queue (`queued_at`), not from its report's acceptance: records
        queued again (a republish after a key rotation, a lost or refused batch) of reports perhaps years old were
        sent at once in batches of a few. It is read from the rows fetched: a batch not full holds every queued
        record of its epoch. (Ordering by `queued_at` instead would sort every queued record on SQLite, whose planner
        keeps to ix_outbox_records_state_id: some 24 ms a batch with 50,000 queued.)
        """
        oldest = session.execute(
            select(OutboxRecord.epoch)
            .where(OutboxRecord.state == "queued", accepted(OutboxRecord.import_id))
            .order_by(OutboxRecord.id).limit(1)).first()
        if oldest is None:
            return None
        epoch = oldest[0]
        fetched = session.execute(
            select(OutboxRecord.queued_at, OutboxRecord.id, OutboxRecord.indicator, OutboxRecord.identifier_type,
                   FraudReport.category, FraudReport.confidence, FraudReport.valid_from, FraudReport.valid_until,
                   FraudReport.evidence_hash, FraudReport.case_ref_hash)
            .join(FraudReport, OutboxRecord.report_id == FraudReport.report_id)
            .where(OutboxRecord.state == "queued", OutboxRecord.epoch == epoch, accepted(OutboxRecord.import_id))
            .order_by(OutboxRecord.id).limit(self.batch_size)).all()
        if not fetched:  # another publisher claimed them since the first read (PostgreSQL: read committed)
            return None
        if (len(fetched) < self.batch_size and not flush
                and _age_s(min(row[0] for row in fetched)) < self.max_wait_s):
            return None
        return epoch, [tuple(row[1:]) for row in fetched]

    def _send(self, prepared: PreparedBatch) -> None:
        try:
            self._ledger.send_raw(prepared.raw_tx)
        except ChainError as exc:
            if not nonce_taken(exc):
                raise
            # Another process of this signer (a CLI vote or key rotation beside the node) took the nonce this one had
            # counted to: the round failed (a warning quoting the endpoint's refusal, a failure in /health) until the
            # next one settled the batch. Signed again with the chain's count now, as a settled batch is.
            logger.info("batch %s: its nonce was taken meanwhile by another process of this signer; signing again",
                        prepared.batch_row_id)
            self._resign(prepared.batch_row_id)
        with self._store.transaction() as session:
            session.execute(update(PublishBatch).where(PublishBatch.id == prepared.batch_row_id)
                            .values(sent_at=utcnow()))

    def _finish(self, batch_row_id: int, *, replaced_key: bool = False) -> None:
        """`replaced_key`: the batch's transaction was signed with a key the bank replaced since: refused (the chain
        takes nothing from that key any more), its records are queued again for the current key at once, the
        publisher not paused as after a refusal of the current key."""
        with self._store.session() as session:
            batch = session.get_one(PublishBatch, batch_row_id)
            tx_hash, root = batch.tx_hash, batch.root
        try:
            mined = self._ledger.wait_published(tx_hash, root)
        except (ChainUnavailable, TransactionTimeout):
            raise  # the batch stays `signed`; the next round settles it
        except ContractRevert as revert:
            error = f"{revert.error_name} {revert.arguments}"
            if replaced_key:
                self._requeue(batch_row_id, f"signed with a replaced signing key: {error}")
                logger.info("batch %s, signed with a replaced signing key, was refused by the chain (%s); its "
                            "records are queued again", batch_row_id, error)
                return
            self._mark_failed(batch_row_id, error)
            raise
        self._mark_confirmed(batch_row_id, mined)

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _mark_confirmed(self, batch_row_id: int, mined: MinedPublish) -> None:
        with self._store.transaction() as session:
            session.execute(update(PublishBatch).where(PublishBatch.id == batch_row_id).values(
                state="confirmed", tx_hash=mined.tx_hash, onchain_batch_id=mined.batch_id,
                block_number=mined.block_number, confirmed_at=utcnow()))
            session.execute(update(OutboxRecord).where(OutboxRecord.publish_batch_id == batch_row_id)
                            .values(state="confirmed"))
        logger.info("batch %s confirmed as on-chain batch %s in block %s", batch_row_id, mined.batch_id,
                    mined.block_number)

    def _mark_failed(self, batch_row_id: int, error: str) -> None:
        """The chain refused the batch (e.g. this bank is suspended): its records wait in the queue again."""
        self._requeue(batch_row_id, error)
        self._paused_until = time.monotonic() + FAILURE_BACKOFF_S
        self.last_error = error
        # Info, not error: the caller re-raises the refusal and reports it once (the worker's warning, the CLI's
        # one error line); logging it here as well printed it twice.
        logger.info("batch %s refused by the chain: %s; its records are queued again", batch_row_id, error)

    def _requeue(self, batch_row_id: int, error: str) -> None:
        with self._store.transaction() as session:
            session.execute(update(PublishBatch).where(PublishBatch.id == batch_row_id)
                            .values(state="failed", error=error))
            _queue_again(session, batch_row_id)


def _queue_again(session: Session, batch_row_id: int) -> None:
    """The records of a failed or lost batch wait in the queue again, for a batch of their own: from now on, as the
    age of the oldest queued record counts (not from their first queuing, perhaps long ago)."""
    session.execute(update(OutboxRecord).where(OutboxRecord.publish_batch_id == batch_row_id)
                    .values(state="queued", publish_batch_id=None, queued_at=utcnow()))


def _ledger_records(session: Session, batch_row_id: int) -> list[LedgerRecord]:
    rows = session.execute(
        select(OutboxRecord.indicator, OutboxRecord.identifier_type, FraudReport.category, FraudReport.confidence,
               FraudReport.valid_from, FraudReport.valid_until, FraudReport.evidence_hash, FraudReport.case_ref_hash)
        .join(FraudReport, OutboxRecord.report_id == FraudReport.report_id)
        .where(OutboxRecord.publish_batch_id == batch_row_id).order_by(OutboxRecord.id)).all()
    return [LedgerRecord(*row) for row in rows]


def _age_s(since: datetime) -> float:
    return (datetime.now(UTC) - as_utc(since)).total_seconds()

