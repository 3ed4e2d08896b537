"""Getting the alliance hashing key of every epoch to every member that checks, through envelopes on chain.

One pass, `sync_keys`, is safe to repeat (a background worker runs it every few seconds, and
`alliance key sync` runs it once). It reads the chain, then:

a) opens every envelope addressed to this member for an epoch it does not hold yet, in block order, from a
   sender the chain shows holding that epoch's key when it sent it (its generator, or the recipient of an earlier
   envelope from a holder); an envelope from any other sender, or one that does not open (sealed for an old key,
   altered, junk), is logged and skipped, never stored;
b) generates the key of an epoch this member is the *generator* of, if nobody can hold it yet. The generator of
   epoch 1 (which begins at deployment) is the lowest-id member with role Member: member 1, the first founder,
   whenever that founder is a Member (roles never change and founders take the first ids, so every node
   agrees). A later epoch's generator is the member that started it (`KeyEpochStarted.startedBy`). The key is
   stored locally *before* anything is published, so a crash after publishing never loses the only copy;
c) publishes envelopes for the epochs it holds to every active Member or Auditor (the roles that check
   identifiers; Observers do not) that has none yet, itself first, so a node restored from its keys directory
   recovers every key from the chain alone.

Who publishes (c): only the *distributor* of an epoch, the lowest-id active Member that holds its key as far as
the chain shows (the generator, or the recipient of an envelope from a holder, as in a), so two nodes do not both
forward the key to a newcomer in the common case. Should it happen anyway (two nodes disagreeing for one block), the
newcomer gets two envelopes of the same key: harmless. A recipient counts as served when an envelope for it
comes from the epoch's generator or from the distributor itself; an envelope from any other member is not
trusted to be good, so a member publishing junk for someone cannot stop the legitimate envelope.

An envelope serves its recipient only if it was published after the recipient's latest `EncryptionKeySet`
(compared by block number and log index): a member that replaces its X25519 key (`alliance key
replace-encryption-key`, node.encryption_key_replacement) is sent every epoch it should hold again, sealed to the
new key, by each epoch's distributor. Until one is out, the member is not counted as holding the epoch (nor as
its distributor): its node may never have opened the old envelope (down through the rotation). The replacing node
holds its keys locally meanwhile (re-sealed under its new vault key), so it keeps checking; a node of that member
restored from its keys directory alone recovers them from the new envelopes once they are out (the old ones are
sealed to the old key and are skipped).

Limits: newcomers, and a member that replaced its X25519 key, wait while the distributor's node is offline.

A chain outage raises `ChainUnavailable` out of the pass; what was stored before it is correct (a received key,
or a generated key not yet fully distributed, which the next pass distributes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from node.chain.registry import KeyEnvelope, Member, MemberRole, MemberStatus
from node.crypto.envelopes import EnvelopeError, open_envelope, public_key_bytes, seal_envelope
from node.crypto.keyed_hash import ALLIANCE_KEY_BYTES
from node.errors import AllianceError, Conflict
from node.store.ledger_tables import AllianceKey

if TYPE_CHECKING:  # the runtime may start the key worker, so it must be able to import this module
    from node.runtime import NodeContext

logger = logging.getLogger(__name__)

# Set on the log record of each envelope a pass skips: `alliance key sync` prints those itself, from the result.
SKIPPED_ENVELOPE = "skipped_key_envelope"
# Why an envelope for this member was skipped: its sender is not known (from the chain) to hold the epoch's key, so
# it is never opened; or it does not open (tampered, sealed to another member, or to a key this member replaced).
UNTRUSTED_SENDER = "untrusted_sender"
DOES_NOT_OPEN = "does_not_open"

# Envelopes this process has warned of (recipient, sender, epoch, block, envelope bytes): the key worker's pass runs
# every few seconds, and an envelope skipped until the key arrives otherwise filled the log with the same warning.
_warned_of: set[tuple[int, int, int, int, bytes]] = set()

# Roles that check identifiers against the ledger, so need the key. Observers only read governance.
KEY_RECIPIENT_ROLES = frozenset({MemberRole.member, MemberRole.auditor})


class EncryptionKeyNotOnChain(AllianceError):
    """The chain holds another X25519 public key for this member than the node's: envelopes sent to this bank are
    sealed to that key, and this node cannot open them."""

    code = "encryption_key_not_on_chain"
    http_status = 503


class NotAMember(AllianceError):
    code = "not_a_member"
    http_status = 403


@dataclass
class KeySyncResult:
    """What one pass did. Never holds key material."""

    member_id: int
    chain_epoch: int
    received: list[int] = field(default_factory=list)  # epochs whose key was opened from an envelope
    generated: list[int] = field(default_factory=list)  # epochs whose key this node made
    published: list[tuple[int, int]] = field(default_factory=list)  # (recipient member id, epoch)
    # (sender, epoch, block, reason) of the envelopes for this member skipped: UNTRUSTED_SENDER or DOES_NOT_OPEN
    rejected: list[tuple[int, int, int, str]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # started epochs this node still lacks
    # Why no envelope is sent to this member ("suspended", "removed", "observer"), or None: it is a recipient.
    not_sent_because: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id, "chain_epoch": self.chain_epoch, "received": self.received,
            "generated": self.generated,
            "published": [{"recipient_member_id": r, "epoch": e} for r, e in self.published],
            "rejected": [{"sender_member_id": s, "epoch": e, "block_number": b, "reason": r}
                         for s, e, b, r in self.rejected],
            "missing": self.missing, "not_sent_because": self.not_sent_because,
        }


@dataclass(frozen=True)
class HeldKey:
    epoch: int
    source: str  # "generated" | "envelope"
    created_at: datetime


@dataclass(frozen=True)
class KeyStatus:
    member_id: int
    chain_epoch: int
    held: list[HeldKey]
    lacking: dict[int, list[int]]  # epoch -> active recipients with no envelope for it on chain

    def to_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id, "chain_epoch": self.chain_epoch,
            "held": [{"epoch": k.epoch, "source": k.source, "created_at": k.created_at.isoformat()}
                     for k in self.held],
            "missing": sorted(set(range(1, self.chain_epoch + 1)) - {k.epoch for k in self.held}),
            "lacking_envelopes": {str(epoch): ids for epoch, ids in self.lacking.items()},
        }


@dataclass(frozen=True)
class _ChainView:
    """Everything one pass needs from the chain, read once at its start."""

    member_id: int
    members: dict[int, Member]
    chain_epoch: int
    generators: dict[int, int]  # epoch -> member id that generates its key
    envelopes: list[KeyEnvelope]  # oldest first
    key_changes: dict[int, tuple[int, int]]  # member id -> (block, log index) of its latest EncryptionKeySet

    def serves(self, envelope: KeyEnvelope) -> bool:
        """Whether `envelope` was sealed to its recipient's current public key: one published before the recipient's
        latest key change is for a key the recipient may no longer have (replaced after a compromise, say)."""
        return envelope.position > self.key_changes.get(envelope.recipient_member_id, (-1, -1))

    @property
    def me(self) -> Member:
        return self.members[self.member_id]

    def recipients(self) -> list[Member]:
        """Active members that need the key, this member first (its own envelope is its backup)."""
        active = [m for m in self.members.values()
                  if m.status == MemberStatus.active and m.role in KEY_RECIPIENT_ROLES]
        return sorted(active, key=lambda m: (m.member_id != self.member_id, m.member_id))

    def trusted_envelopes(self, epoch: int) -> list[KeyEnvelope]:
        """The envelopes of `epoch` sent by a member that held its key when sending, as the chain shows: its
        generator, or the recipient of an earlier trusted envelope. Oldest first.

        An envelope from any other member (one that had not received the key) is junk or a key of its own making:
        counting its recipient as a holder would let it stall the distribution (that recipient cannot forward), and
        opening it would split the alliance into two keys for one epoch.
        """
        holders = {self.generators[epoch]} if epoch in self.generators else set()
        trusted = []
        for envelope in self.envelopes:
            if envelope.epoch == epoch and envelope.sender_member_id in holders:
                trusted.append(envelope)
                holders.add(envelope.recipient_member_id)
        return trusted

    def holders(self, epoch: int) -> set[int]:
        """Members the chain shows able to hold `epoch`'s key: its generator and the recipients of trusted envelopes
        sealed to their current X25519 key.

        A recipient whose only envelopes predate its latest key change may never have opened them (its node was down
        through the rotation, then replaced its key): counted, it could be the distributor, which sends nothing for
        an epoch it lacks, so neither it nor a newcomer ever got the key. Left out, the next holder sends it the key
        again, sealed to the new key, and it counts once that envelope is out."""
        generator = {self.generators[epoch]} if epoch in self.generators else set()
        return generator | {e.recipient_member_id for e in self.trusted_envelopes(epoch) if self.serves(e)}

    def distributor(self, epoch: int) -> int | None:
        """Lowest-id active Member known (from the chain, or to this node itself) to hold `epoch`."""
        holders = self.holders(epoch) | {self.member_id}
        eligible = [i for i in holders if i in self.members and _can_publish(self.members[i])]
        return min(eligible, default=None)


def _not_sent_because(member: Member) -> str | None:
    """Why no member's node sends `member` envelopes (`recipients`), or None if they do."""
    if member.role not in KEY_RECIPIENT_ROLES:
        return member.role.name
    return None if member.status == MemberStatus.active else member.status.name


def _can_publish(member: Member) -> bool:
    return member.status == MemberStatus.active and member.role == MemberRole.member


def _read_chain(node: NodeContext) -> _ChainView:
    member_id = node.member_id
    if member_id == 0:
        raise NotAMember(f"{node.address} is not a member of the alliance; it receives the alliance key once "
                         "admitted", code="not_a_member")
    registry = node.registry()
    # The envelopes first: each read below is at the chain's head then, so it sees the start of every envelope's
    # epoch and its recipient. Read after the epochs, an envelope of an epoch started meanwhile (another member
    # rotating during the pass) came from a sender not known to hold the key, and was skipped as untrusted.
    envelopes = registry.key_envelopes()
    members = {m.member_id: m for m in registry.members()}
    generators: dict[int, int] = {}
    voting = [i for i, m in sorted(members.items()) if m.role == MemberRole.member]
    if voting:
        generators[1] = voting[0]
    for epoch, started_by, _block in registry.key_epochs_started():
        generators[epoch] = started_by
    key_changes = {change.member_id: change.position for change in registry.encryption_keys_set()}  # oldest first
    return _ChainView(member_id, members, registry.current_key_epoch(), generators, envelopes, key_changes)


def sync_keys(node: NodeContext) -> KeySyncResult:
    """One idempotent pass: receive, generate and distribute alliance keys (see the module docstring)."""
    view = _read_chain(node)
    result = KeySyncResult(view.member_id, view.chain_epoch, not_sent_because=_not_sent_because(view.me))
    held = set(node.keyring.keys())
    _receive(node, view, held, result)
    if _can_publish(view.me):
        _generate(node, view, held, result)
        _distribute(node, view, held, result)
    result.missing = sorted(set(range(1, view.chain_epoch + 1)) - held)
    _refuse_a_key_the_chain_does_not_have(node, view)  # after distributing: other members are not held up
    return result


def _refuse_a_key_the_chain_does_not_have(node: NodeContext, view: _ChainView) -> None:
    """Raise EncryptionKeyNotOnChain if the chain has another public key for this member than the node's: a
    replacement whose last step did not reach the chain, or a keys directory restored from before one. Every pass
    then fails visibly (the key worker's state in /health, `alliance key sync`), instead of skipping each new
    envelope as one that does not open while the node hashes with old epochs only."""
    if view.me.role not in KEY_RECIPIENT_ROLES:
        return
    local = public_key_bytes(node.encryption_key)
    if view.me.encryption_key != local:
        raise EncryptionKeyNotOnChain(
            f"the chain holds another encryption key for member {view.member_id} than this node's ({local.hex()}): "
            "keys sent to this bank cannot be opened here; run `alliance key replace-encryption-key` to finish a "
            "replacement")


def rotate(node: NodeContext) -> int:
    """Start a new key epoch on chain, then generate, store and distribute its key; returns the epoch.

    The epoch's generator is this member (it started it), so the ordinary pass does the rest, and a failure after
    `startKeyEpoch` is finished by the next pass of the worker, or by running `rotate` again: while the newest epoch
    is this member's and its key has not left this node, `rotate` finishes it instead of starting another.
    Reports published under older epochs keep matching (checks hash under every epoch held) until the reporting node
    republishes them under the new one.
    """
    if node.member_id == 0:
        raise NotAMember(f"{node.address} is not a member of the alliance", code="not_a_member")
    view = _read_chain(node)
    if _rotation_unfinished(view):
        # The last rotation here stopped (killed, the chain down) after startKeyEpoch and before its key left this
        # node, and the operator runs it again: finishing that epoch is what was asked. Starting another would leave
        # every member one more key to hold and hash under, and this bank one more republish.
        logger.info("finishing key epoch %d, started by this member, whose key has not been sent yet", view.chain_epoch)
        sync_keys(node)
        return view.chain_epoch
    epoch = node.registry(signing=True).start_key_epoch()
    sync_keys(node)
    return epoch


def _rotation_unfinished(view: _ChainView) -> bool:
    """Whether the newest epoch was started by this member and its key has not left this node yet.

    A rotation sends this member's own envelope first (its backup), so until that is on chain the key is at most
    here: finishing the epoch is what running `rotate` again asks for. Once the key is out, the worker finishes
    sending it, and `rotate` starts a new epoch as asked: an operator may be rotating because a key leaked, and an
    epoch whose key went out (a newcomer still unserved, say) must not be mistaken for that rotation.
    """
    epoch = view.chain_epoch
    # Epoch 1 begins at deployment: a rotation never started it, so a rotation never finishes it.
    if epoch == 1 or view.generators.get(epoch) != view.member_id or not _can_publish(view.me):
        return False
    return not any(e.epoch == epoch and e.sender_member_id == view.member_id == e.recipient_member_id
                   for e in view.envelopes)


def key_status(node: NodeContext) -> KeyStatus:
    """Epochs held here (with where each key came from) and, per epoch, active recipients without an envelope.

    Reads only the key rows' metadata, so it needs no passphrase.
    """
    view = _read_chain(node)
    with node.store.session() as session:
        rows = session.scalars(select(AllianceKey).order_by(AllianceKey.epoch)).all()
        held = [HeldKey(row.epoch, row.source, row.created_at) for row in rows]
    lacking: dict[int, list[int]] = {}
    for epoch in range(1, view.chain_epoch + 1):
        served = {e.recipient_member_id for e in view.trusted_envelopes(epoch) if view.serves(e)}
        lacking[epoch] = sorted(m.member_id for m in view.recipients() if m.member_id not in served)
    return KeyStatus(view.member_id, view.chain_epoch, held, lacking)


def _receive(node: NodeContext, view: _ChainView, held: set[int], result: KeySyncResult) -> None:
    trusted = {e for epoch in range(1, view.chain_epoch + 1) for e in view.trusted_envelopes(epoch)}
    for envelope in view.envelopes:
        if envelope.recipient_member_id != view.member_id or envelope.epoch in held:
            continue
        if envelope not in trusted:
            _skipped(view.member_id, envelope, UNTRUSTED_SENDER,
                     "the sender did not hold that epoch's key as far as the chain shows", result)
            continue
        try:
            key = open_envelope(envelope=envelope.envelope, recipient_private_key=node.encryption_key,
                                recipient_member_id=view.member_id, epoch=envelope.epoch)
            stored = node.keyring.store_key(envelope.epoch, key, source="envelope")
        except (EnvelopeError, Conflict) as exc:
            _skipped(view.member_id, envelope, DOES_NOT_OPEN, str(exc), result)
            continue
        held.add(envelope.epoch)
        if stored:  # False: another process of this node (worker or CLI) stored it a moment ago
            result.received.append(envelope.epoch)


def _skipped(member_id: int, envelope: KeyEnvelope, reason: str, why: str, result: KeySyncResult) -> None:
    """Record a skipped envelope in the pass's result, and warn of it the first time this process skips it."""
    result.rejected.append((envelope.sender_member_id, envelope.epoch, envelope.block_number, reason))
    seen = (member_id, envelope.sender_member_id, envelope.epoch, envelope.block_number, bytes(envelope.envelope))
    level = logging.DEBUG if seen in _warned_of else logging.WARNING
    _warned_of.add(seen)
    logger.log(level, "skipped the key envelope for epoch %d from member %d (block %d): %s", envelope.epoch,
               envelope.sender_member_id, envelope.block_number, why, extra={SKIPPED_ENVELOPE: True})


def _generate(node: NodeContext, view: _ChainView, held: set[int], result: KeySyncResult) -> None:
    for epoch, generator in sorted(view.generators.items()):
        if generator != view.member_id or epoch in held or epoch > view.chain_epoch:
            continue
        if any(e.epoch == epoch and e.sender_member_id == view.member_id for e in view.envelopes):
            # Generated here before, then lost (a store restored without it). Its own envelope did not open,
            # so another holder must forward it; a second key would split the alliance.
            logger.warning("this node generated the key of epoch %d but no longer holds it; waiting for "
                           "another member to forward it", epoch)
            continue
        try:
            node.keyring.store_key(epoch, os.urandom(ALLIANCE_KEY_BYTES), source="generated")
        except Conflict:
            # Another process of this node (worker and CLI) generated it first; keep that one.
            logger.info("the key of epoch %d was generated concurrently; keeping the stored one", epoch)
        else:
            result.generated.append(epoch)
        held.add(epoch)


def _distribute(node: NodeContext, view: _ChainView, held: set[int], result: KeySyncResult) -> None:
    registry = None
    for epoch in sorted(held):
        if epoch > view.chain_epoch or view.distributor(epoch) != view.member_id:
            continue
        trusted = {view.generators.get(epoch), view.member_id}
        served = {e.recipient_member_id for e in view.envelopes
                  if e.epoch == epoch and e.sender_member_id in trusted and view.serves(e)}
        key = node.keyring.key(epoch)
        for member in view.recipients():
            if member.member_id in served:
                continue
            try:
                sealed = seal_envelope(recipient_public_key=member.encryption_key,
                                       recipient_member_id=member.member_id, epoch=epoch, alliance_key=key)
            except ValueError as exc:
                logger.warning("cannot seal the key of epoch %d for member %d: %s", epoch, member.member_id, exc)
                continue
            registry = registry or node.registry(signing=True)
            registry.publish_key_envelope(member.member_id, epoch, sealed)
            result.published.append((member.member_id, epoch))
