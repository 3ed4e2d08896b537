"""Alliance key distribution between real bank nodes on anvil: generate, receive, forward, rotate."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.chain.client import ChainClient
from node.chain.errors import ChainUnavailable
from node.chain.registry import MemberRole, RegistryClient
from node.crypto.envelopes import open_envelope, public_key_bytes, seal_envelope
from node.encryption_key_replacement import replace_encryption_key
from node.ledger.key_distribution import DOES_NOT_OPEN, UNTRUSTED_SENDER, NotAMember, key_status, rotate, sync_keys
from node.runtime import NodeContext
from tests.chain.capped_rpc import capped_rpc
from tests.conftest import LedgerNodes, chain_texts, free_port, make_node, moved_to_store


def envelope_count(node: NodeContext) -> int:
    return len(node.registry().key_envelopes())


def suspend(ledger_nodes: LedgerNodes, member_id: int) -> None:
    a, b = ledger_nodes.nodes[:2]
    outcome = a.registry(signing=True).propose_suspension(member_id)
    assert b.registry(signing=True).vote(outcome.proposal_id).executed


def test_sync_keys_generates_epoch_one_and_every_member_receives_it(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    first = sync_keys(a)
    assert (first.generated, first.received, first.missing) == ([1], [], [])
    assert first.published == [(1, 1), (2, 1), (3, 1)]
    for node in (b, c):
        result = sync_keys(node)
        assert (result.received, result.generated, result.published, result.missing) == ([1], [], [], [])
    assert a.keyring.key(1) == b.keyring.key(1) == c.keyring.key(1)
    assert [(k.epoch, k.source) for k in key_status(a).held] == [(1, "generated")]
    assert [(k.epoch, k.source) for k in key_status(b).held] == [(1, "envelope")]


def test_sync_keys_again_publishes_nothing(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert envelope_count(a) == 3
    for node in (a, b, c, a):
        result = sync_keys(node)
        assert (result.published, result.generated, result.received) == ([], [], [])
    assert envelope_count(a) == 3
    assert key_status(c).lacking == {1: []}


def test_sync_keys_before_the_generator_waits(ledger_nodes: LedgerNodes) -> None:
    _, b, _ = ledger_nodes.nodes
    result = sync_keys(b)
    assert (result.generated, result.published, result.missing) == ([], [], [1])
    assert envelope_count(b) == 0
    assert key_status(b).lacking == {1: [1, 2, 3]}


def test_sync_keys_forwards_the_key_to_an_admitted_member(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    assert sync_keys(newcomer).missing == [1]
    # Only the lowest-id holder (A) forwards: B and C leave it alone.
    assert sync_keys(b).published == [] and sync_keys(c).published == []
    assert sync_keys(a).published == [(4, 1)]
    result = sync_keys(newcomer)
    assert (result.received, result.published, result.missing) == ([1], [], [])
    assert newcomer.keyring.key(1) == a.keyring.key(1)
    assert envelope_count(a) == 4


def test_sync_keys_sends_to_auditors_and_not_to_observers(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a = ledger_nodes.nodes[0]
    auditor = ledger_nodes.admit(tmp_path, "AUDIT-E", MemberRole.auditor)
    observer = ledger_nodes.admit(tmp_path, "OBSERVE-F", MemberRole.observer)
    assert sorted(sync_keys(a).published) == [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert sync_keys(auditor).received == [1]
    assert auditor.keyring.key(1) == a.keyring.key(1)
    observed = sync_keys(observer)
    assert (observed.received, observed.published, observed.missing) == ([], [], [1])


def test_sync_keys_forwarding_moves_to_the_next_holder_when_the_lowest_is_suspended(
        ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    outcome = b.registry(signing=True).propose_suspension(1)
    c.registry(signing=True).vote(outcome.proposal_id)
    assert newcomer.registry(signing=True).vote(outcome.proposal_id).executed  # 3 of 4
    assert sync_keys(c).published == []
    assert sync_keys(b).published == [(4, 1)]
    assert sync_keys(newcomer).received == [1]
    assert newcomer.keyring.key(1) == a.keyring.key(1)


def test_rotate_gives_every_member_the_new_epoch_and_keeps_the_old(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert rotate(b) == 2
    assert b.registry().current_key_epoch() == 2
    assert {(e.recipient_member_id, e.sender_member_id) for e in b.registry().key_envelopes(epoch=2)} == \
        {(1, 2), (2, 2), (3, 2)}
    for node in (a, c):
        assert sync_keys(node).received == [2]
    assert a.keyring.keys() == b.keyring.keys() == c.keyring.keys()
    assert a.keyring.key(1) != a.keyring.key(2)
    assert c.keyring.current() == (2, b.keyring.key(2))
    assert [(k.epoch, k.source) for k in key_status(b).held] == [(1, "envelope"), (2, "generated")]


def test_rotate_again_after_a_kill_before_the_key_was_made_finishes_that_epoch(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert b.registry(signing=True).start_key_epoch() == 2  # `key rotate` killed right after this transaction
    assert rotate(b) == 2
    assert b.registry().current_key_epoch() == 2
    assert {e.recipient_member_id for e in b.registry().key_envelopes(epoch=2)} == {1, 2, 3}
    assert sync_keys(a).received == [2] and a.keyring.key(2) == b.keyring.key(2)
    assert rotate(b) == 3  # that rotation finished: the next one starts a new epoch


def _rotation_killed_after_storing_its_key(ledger_nodes: LedgerNodes) -> bytes:
    """Every bank holding epoch 1, then B's `key rotate` killed once it started epoch 2 and stored its key."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert b.registry(signing=True).start_key_epoch() == 2
    key = os.urandom(32)
    b.keyring.store_key(2, key, source="generated")
    return key


def test_rotate_again_after_a_kill_before_sending_finishes_that_epoch(ledger_nodes: LedgerNodes) -> None:
    _, b, c = ledger_nodes.nodes
    key = _rotation_killed_after_storing_its_key(ledger_nodes)  # before its first envelope (its own) was mined
    assert rotate(b) == 2
    assert b.registry().current_key_epoch() == 2
    assert sorted(e.recipient_member_id for e in b.registry().key_envelopes(epoch=2)) == [1, 2, 3]
    assert sync_keys(c).received == [2] and c.keyring.key(2) == key


def test_rotate_starts_a_new_epoch_once_the_last_ones_key_left_the_node(ledger_nodes: LedgerNodes,
                                                                       tmp_path: Path) -> None:
    b = ledger_nodes.nodes[1]
    # Killed after sending its own envelope: the key is out, and the worker sends the rest. Running rotate again
    # (perhaps because a key leaked) starts a new epoch.
    key = _rotation_killed_after_storing_its_key(ledger_nodes)
    b.registry(signing=True).publish_key_envelope(2, 2, seal_envelope(
        recipient_public_key=public_key_bytes(b.encryption_key), recipient_member_id=2, epoch=2, alliance_key=key))
    assert rotate(b) == 3
    # A rotation that reached everyone, then a newcomer not yet served: rotate still rotates.
    ledger_nodes.admit(tmp_path / "d", "BANK-D")
    assert rotate(b) == 4
    assert b.registry().current_key_epoch() == 4


def test_rotate_sends_nothing_to_a_suspended_member_until_reinstated(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    suspend(ledger_nodes, 3)
    assert rotate(a) == 2
    assert {e.recipient_member_id for e in a.registry().key_envelopes(epoch=2)} == {1, 2}
    result = sync_keys(c)
    assert (result.received, result.published, result.missing) == ([], [], [2])
    assert set(c.keyring.keys()) == {1}
    assert key_status(a).lacking == {1: [], 2: []}  # a suspended member is not a recipient
    a_registry, b_registry = a.registry(signing=True), b.registry(signing=True)
    assert b_registry.vote(a_registry.propose_reinstatement(3).proposal_id).executed
    assert sync_keys(a).published == [(3, 2)]
    assert sync_keys(c).received == [2] and c.keyring.key(2) == a.keyring.key(2)


def test_sync_keys_sends_every_epoch_again_to_a_member_that_set_a_new_encryption_key(
        ledger_nodes: LedgerNodes) -> None:
    """An envelope published before its recipient's latest EncryptionKeySet is sealed to a key the recipient may no
    longer have: it no longer counts as serving it. It did, and a member that replaced its key got nothing again."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert rotate(a) == 2
    new_key = X25519PrivateKey.generate()

    b.registry(signing=True).set_encryption_key(public_key_bytes(new_key))

    assert key_status(a).lacking == {1: [b.member_id], 2: [b.member_id]}
    assert sync_keys(a).published == [(b.member_id, 1), (b.member_id, 2)]
    assert sync_keys(a).published == [] and key_status(c).lacking == {1: [], 2: []}
    for envelope in a.registry().key_envelopes(recipient_member_id=b.member_id)[-2:]:
        assert open_envelope(envelope=envelope.envelope, recipient_private_key=new_key,
                             recipient_member_id=b.member_id, epoch=envelope.epoch) == a.keyring.key(envelope.epoch)



def test_sync_keys_sends_a_new_epoch_again_to_the_lowest_member_that_replaced_its_key_before_opening_it(
        ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    """A (member 1) is down while B rotates, then replaces its X25519 key: its epoch-2 envelope is sealed to the old
    key. A still counted as holding epoch 2, so A was its distributor: nobody sent A the key again, and a newcomer
    never got it either."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert rotate(b) == 2  # A's node is down: it never opens its envelope of epoch 2
    replace_encryption_key(a)
    a = NodeContext(a.settings)  # started again, with its new key
    ledger_nodes.nodes.append(a)
    assert sync_keys(a).missing == [2]

    assert sync_keys(c).published == [] and sync_keys(b).published == [(1, 2)]
    assert sync_keys(a).received == [2] and a.keyring.key(2) == b.keyring.key(2)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    assert sync_keys(b).published == [] and sync_keys(a).published == [(4, 1), (4, 2)]
    assert sync_keys(newcomer).received == [1, 2]
    assert key_status(c).lacking == {1: [], 2: []}

def test_sync_keys_skips_a_tampered_envelope(ledger_nodes: LedgerNodes, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = ledger_nodes.nodes
    sealed = bytearray(seal_envelope(recipient_public_key=public_key_bytes(b.encryption_key), recipient_member_id=2,
                                     epoch=1, alliance_key=os.urandom(32)))
    sealed[-1] ^= 0x01
    junk = c.registry(signing=True).publish_key_envelope(2, 1, bytes(sealed))
    # The junk for B neither stops A from generating nor counts as B's envelope.
    assert sync_keys(a).published == [(1, 1), (2, 1), (3, 1)]
    with caplog.at_level(logging.WARNING, logger="node.ledger.key_distribution"):
        result = sync_keys(b)
    assert result.rejected == [(3, 1, junk.block_number, UNTRUSTED_SENDER)]  # C held no key yet when it sent it
    assert result.received == [1]
    assert b.keyring.key(1) == a.keyring.key(1)
    assert "skipped the key envelope for epoch 1 from member 3" in caplog.text
    assert sync_keys(b).rejected == []  # epoch 1 is held: its envelopes are not opened again


def test_sync_keys_skips_an_envelope_altered_after_a_holder_sealed_it(ledger_nodes: LedgerNodes,
                                                                     tmp_path: Path) -> None:
    """The threat model's envelope altered in transit: sent by B, which holds the key (so not skipped as from an
    untrusted sender), it does not open and is never stored; A's envelope still serves the newcomer."""
    a, b, _ = ledger_nodes.nodes
    sync_keys(a)
    sync_keys(b)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    sealed = bytearray(seal_envelope(recipient_public_key=public_key_bytes(newcomer.encryption_key),
                                     recipient_member_id=4, epoch=1, alliance_key=b.keyring.key(1)))
    sealed[-1] ^= 0x01
    altered = b.registry(signing=True).publish_key_envelope(4, 1, bytes(sealed))
    assert sync_keys(a).published == [(4, 1)]
    result = sync_keys(newcomer)
    assert (result.rejected, result.received) == ([(2, 1, altered.block_number, DOES_NOT_OPEN)], [1])
    assert newcomer.keyring.key(1) == a.keyring.key(1)


def test_sync_keys_refuses_a_key_sent_by_a_member_that_does_not_hold_the_epoch(
        ledger_nodes: LedgerNodes, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert b.registry(signing=True).start_key_epoch() == 2  # B's rotation, before B's node ran a pass
    # C, which never received epoch 2, sends A a well-formed envelope of a key of its own.
    forged = c.registry(signing=True).publish_key_envelope(1, 2, seal_envelope(
        recipient_public_key=public_key_bytes(a.encryption_key), recipient_member_id=1, epoch=2,
        alliance_key=os.urandom(32)))
    with caplog.at_level(logging.DEBUG, logger="node.ledger.key_distribution"):
        assert sync_keys(a).rejected == [(3, 2, forged.block_number, UNTRUSTED_SENDER)]
        assert sync_keys(a).rejected == [(3, 2, forged.block_number, UNTRUSTED_SENDER)]  # the key worker's next pass
    # Warned of once: the key worker's pass every few seconds repeated the warning until the key arrived.
    assert [r.levelno for r in caplog.records if "from member 3" in r.getMessage()] == [logging.WARNING, logging.DEBUG]
    assert set(a.keyring.keys()) == {1}
    # A is not counted as holding epoch 2, so B (the generator) still distributes it, to A first of the others.
    assert sync_keys(b).published == [(2, 2), (1, 2), (3, 2)]
    for node in (a, c):
        assert sync_keys(node).received == [2]
    assert a.keyring.key(2) == b.keyring.key(2) == c.keyring.key(2)
    assert key_status(b).lacking == {1: [], 2: []}


def test_sync_keys_distributes_despite_junk_sent_to_a_lower_member(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    assert b.registry(signing=True).start_key_epoch() == 2
    junk = bytearray(seal_envelope(recipient_public_key=public_key_bytes(a.encryption_key), recipient_member_id=1,
                                   epoch=2, alliance_key=os.urandom(32)))
    junk[-1] ^= 0x01
    c.registry(signing=True).publish_key_envelope(1, 2, bytes(junk))
    # The junk's recipient (member 1) does not become the distributor of epoch 2: B sends it.
    assert sync_keys(b).published == [(2, 2), (1, 2), (3, 2)]
    assert sync_keys(a).received == [2] and sync_keys(c).received == [2]
    assert a.keyring.key(2) == b.keyring.key(2) == c.keyring.key(2)


def test_sync_keys_skips_an_envelope_copied_from_another_member(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, _, c = ledger_nodes.nodes
    sync_keys(a)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    [for_c] = a.registry().key_envelopes(recipient_member_id=3)
    copied = c.registry(signing=True).publish_key_envelope(4, 1, for_c.envelope)  # sealed for member 3
    assert sync_keys(a).published == [(4, 1)]
    result = sync_keys(newcomer)
    assert (result.rejected, result.received) == ([(3, 1, copied.block_number, DOES_NOT_OPEN)], [1])
    assert newcomer.keyring.key(1) == a.keyring.key(1)


def test_sync_keys_restores_keys_from_the_chain_after_losing_the_store(ledger_nodes: LedgerNodes,
                                                                       store_url: str) -> None:
    a, b = ledger_nodes.nodes[:2]
    sync_keys(a)
    key = a.keyring.key(1)
    # The keys dir survives, the database does not: the node's own envelope brings the key back.
    restored = moved_to_store(a, store_url)
    ledger_nodes.nodes.append(restored)
    result = sync_keys(restored)
    assert (result.received, result.generated, result.published) == ([1], [], [])
    assert restored.keyring.key(1) == key
    assert envelope_count(b) == 3
    assert [(k.epoch, k.source) for k in key_status(restored).held] == [(1, "envelope")]


def test_sync_keys_when_the_chain_is_down_raises_and_stores_nothing(ledger_nodes: LedgerNodes) -> None:
    a = ledger_nodes.nodes[0]
    offline = NodeContext(a.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"}))
    ledger_nodes.nodes.append(offline)
    with pytest.raises(ChainUnavailable):
        sync_keys(offline)
    assert offline.keyring.keys() == {}
    assert sync_keys(a).generated == [1]  # the chain back: the next pass does the work


def test_sync_keys_of_a_bank_not_admitted_fails(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    outsider = make_node(tmp_path, ledger_nodes.rpc_url, ledger_nodes.deployment_file, "Bank Z", "BANK-Z")
    ledger_nodes.nodes.append(outsider)
    with pytest.raises(NotAMember, match="not a member"):
        sync_keys(outsider)
    with pytest.raises(NotAMember):
        rotate(outsider)


def test_rotate_by_a_suspended_member_is_refused(ledger_nodes: LedgerNodes) -> None:
    from node.chain.errors import ContractRevert

    c = ledger_nodes.nodes[2]
    suspend(ledger_nodes, 3)
    with pytest.raises(ContractRevert, match="AllianceRegistryNotActiveMember"):
        rotate(c)
    assert c.registry().current_key_epoch() == 1


def test_no_key_bytes_appear_on_chain(ledger_nodes: LedgerNodes, tmp_path: Path) -> None:
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    rotate(c)
    newcomer = ledger_nodes.admit(tmp_path, "BANK-D")
    sync_keys(a)
    sync_keys(newcomer)
    keys = [k.hex() for k in a.keyring.keys().values()]
    assert len(keys) == 2 and newcomer.keyring.keys() == a.keyring.keys()
    seen = chain_texts(ledger_nodes.rpc_url)
    assert len(seen) > 20
    assert not [text for text in seen for key in keys if key in text]


def test_sync_keys_through_an_endpoint_that_caps_log_ranges(ledger_nodes: LedgerNodes) -> None:
    """Key distribution read every envelope and epoch from block 0 in one eth_getLogs: behind a Besu endpoint
    (`--rpc-max-logs-range`) on a chain longer than the cap, every pass failed and no member ever got a key."""
    ChainClient(ledger_nodes.rpc_url).rpc("anvil_mine", [hex(40)])
    with capped_rpc(ledger_nodes.rpc_url, 16) as relay:
        nodes = [NodeContext(n.settings.model_copy(update={"rpc_url": relay.url})) for n in ledger_nodes.nodes]
        try:
            assert sync_keys(nodes[0]).generated == [1]
            assert [sync_keys(node).received for node in nodes[1:]] == [[1], [1]]
            assert nodes[1].keyring.key(1) == nodes[2].keyring.key(1) == nodes[0].keyring.key(1)
            assert relay.refused >= 1
        finally:
            for node in nodes:
                node.close()


def test_sync_keys_during_another_members_rotation_skips_none_of_its_envelopes(
        ledger_nodes: LedgerNodes, monkeypatch: pytest.MonkeyPatch) -> None:
    """B rotates while A's pass reads the chain, between A's read of the epochs started and of the envelopes: A saw
    B's envelope of epoch 2 without B's start of it, and skipped it as sent by a member not holding the key."""
    a, b, c = ledger_nodes.nodes
    for node in (a, b, c):
        sync_keys(node)
    reads_of_epochs = RegistryClient.key_epochs_started

    def b_rotates_meanwhile(registry: RegistryClient, **kwargs: int) -> list[tuple[int, int, int]]:
        started = reads_of_epochs(registry, **kwargs)
        with monkeypatch.context() as inside:
            inside.setattr(RegistryClient, "key_epochs_started", reads_of_epochs)
            assert rotate(b) == 2
        return started

    with monkeypatch.context() as racing:
        racing.setattr(RegistryClient, "key_epochs_started", b_rotates_meanwhile)
        during = sync_keys(a)

    assert (during.rejected, during.missing) == ([], [2])  # the next pass receives it
    assert sync_keys(a).received == [2] and a.keyring.key(2) == b.keyring.key(2)
