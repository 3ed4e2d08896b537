from node.chain.registry import MemberStatus
from tests.conftest import LedgerNodes


def test_ledger_nodes_are_active_members_with_epoch_one(ledger_nodes: LedgerNodes) -> None:
    a, b, c = ledger_nodes.nodes
    assert [node.member_id for node in (a, b, c)] == [1, 2, 3]
    assert a.registry().current_key_epoch() == 1
    assert {m.status for m in b.registry().members()} == {MemberStatus.active}
    envelope_receipt = a.registry(signing=True).publish_key_envelope(2, 1, b"\x01" * 93)
    assert envelope_receipt.status == 1
    [envelope] = c.registry().key_envelopes(recipient_member_id=2)
    assert (envelope.epoch, envelope.sender_member_id, envelope.envelope) == (1, 1, b"\x01" * 93)
    assert c.registry().key_envelopes(recipient_member_id=3) == []
