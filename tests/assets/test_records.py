"""The on-chain form of a servicing report's statuses (4 bits a loan) and its raw event."""

from __future__ import annotations

import pytest

from node.assets.records import LoanStatus, pack_statuses, unpack_statuses
from node.chain.asset_registry import _reported_statuses
from node.chain.errors import MalformedChainAnswer


@pytest.mark.parametrize(("statuses", "packed"), [
    ([], b""),
    ([LoanStatus.current], b"\x10"),
    ([LoanStatus.current, LoanStatus.defaulted], b"\x15"),
    ([LoanStatus.repurchased, LoanStatus.dpd30, LoanStatus.repaid], b"\x72\x60"),
])
def test_pack_statuses_two_a_byte_earlier_loan_high(statuses: list[LoanStatus], packed: bytes) -> None:
    assert pack_statuses(statuses) == packed
    assert unpack_statuses(packed, len(statuses)) == [int(s) for s in statuses]


@pytest.mark.parametrize(("packed", "count", "reason"), [
    (b"\x11", 3, "1 bytes of statuses for 3 loans"),
    (b"\x11\x11", 3, "padding half of an odd count is not 0"),
    (b"\x10", 2, "outside 1 to 7"),
    (b"\x81", 2, "outside 1 to 7"),
])
def test_unpack_statuses_refuses_a_malformed_vector(packed: bytes, count: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        unpack_statuses(packed, count)


def _log(data: bytes, topics: int = 3) -> dict[str, object]:
    return {"topics": ["0x" + "00" * 31 + f"{i:02x}" for i in range(topics)], "data": "0x" + data.hex(),
            "blockNumber": "0x5", "transactionHash": "0x" + "ab" * 32}


def test_reported_statuses_decodes_the_raw_event() -> None:
    statuses = bytes(range(1, 40))
    data = (7).to_bytes(32, "big") + (64).to_bytes(32, "big") + len(statuses).to_bytes(32, "big") + statuses
    event = _reported_statuses(_log(data + b"\x00" * 25))
    assert (event.pool_id, event.period, event.offset, event.statuses, event.block_number) == (1, 2, 7, statuses, 5)


@pytest.mark.parametrize("log", [
    _log(bytes(32) + (64).to_bytes(32, "big") + (40).to_bytes(32, "big") + b"\x01" * 32),  # shorter than its length
    _log(bytes(32) + (32).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x01" * 32),  # another head offset
    _log(bytes(32) + (64).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x01" * 32, topics=2),
    {"topics": [], "data": None},
])
def test_reported_statuses_refuses_a_malformed_log(log: dict[str, object]) -> None:
    with pytest.raises(MalformedChainAnswer, match="malformed LoanStatusesReported log"):
        _reported_statuses(log)
