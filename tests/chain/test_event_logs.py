"""Event logs from endpoints that cap the blocks of one eth_getLogs (Besu's --rpc-max-logs-range)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import pytest

from node.chain.client import ChainClient
from node.chain.errors import ChainDataMissing, ChainError, ChainUnavailable
from node.chain.registry import RegistryClient
from tests.chain.capped_rpc import CappedRpc, capped_rpc
from tests.conftest import Consortium, free_port

CAP = 8


def started_epochs(consortium: Consortium, rounds: int) -> None:
    """KeyEpochStarted events spread over more blocks than CAP, some of them empty."""
    registry = consortium.registry(consortium.banks[0])
    for _ in range(rounds):
        registry.start_key_epoch()
        registry.chain.rpc("anvil_mine", [hex(CAP + 3)])


@contextmanager
def epochs_behind_a_cap(consortium: Consortium) -> Iterator[tuple[CappedRpc, ChainClient, Any, list[Any]]]:
    """Three KeyEpochStarted events, a client of them behind a relay capping eth_getLogs at CAP blocks, the event,
    and the logs that client read once (learning the relay's cap)."""
    started_epochs(consortium, 3)
    address = consortium.deployment.address("AllianceRegistry")
    with capped_rpc(consortium.rpc_url, CAP) as relay:
        client = ChainClient(relay.url)
        event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
        yield relay, client, event, client.event_logs(event)


def test_event_logs_through_a_capped_endpoint_are_the_whole_answer(consortium: Consortium) -> None:
    """Every whole-chain log read (key envelopes, epochs, pool events, loan ids, own batches) asked blocks 0..head in
    one eth_getLogs: a Besu endpoint refuses that once the chain is longer than its cap (about 33 minutes of 2 s
    blocks at Besu 22's default), and key distribution, the publisher's recovery and the auditor's verifier failed."""
    started_epochs(consortium, 4)
    address = consortium.deployment.address("AllianceRegistry")
    direct = ChainClient(consortium.rpc_url)
    expected = direct.event_logs(direct.contract("AllianceRegistry", address).events.KeyEpochStarted())
    assert [int(log["args"]["epoch"]) for log in expected] == [2, 3, 4, 5]
    with capped_rpc(consortium.rpc_url, CAP) as relay:
        capped = ChainClient(relay.url)
        event = capped.contract("AllianceRegistry", address).events.KeyEpochStarted()
        assert capped.event_logs(event) == expected
        assert relay.refused >= 1
        taken = relay.log_ranges[relay.refused:]
        assert all(last - first + 1 <= CAP for first, last in taken)
        assert taken[0][0] == 0 and taken[-1][1] == direct.block_number()
        assert all(b[0] == a[1] + 1 for a, b in pairwise(taken))  # no gap, no overlap

        # The width the endpoint took is kept: the next read is refused nothing.
        refused, asked = relay.refused, len(relay.log_ranges)
        assert capped.event_logs(event, from_block=3) == [log for log in expected if log["blockNumber"] >= 3]
        assert relay.refused == refused and len(relay.log_ranges) > asked


def test_an_endpoint_that_refuses_even_one_block_is_an_error(consortium: Consortium) -> None:
    address = consortium.deployment.address("AllianceRegistry")
    with capped_rpc(consortium.rpc_url, 0) as relay:
        capped = ChainClient(relay.url)
        with pytest.raises(ChainError, match="exceeds maximum RPC range limit"):
            capped.event_logs(capped.contract("AllianceRegistry", address).events.KeyEpochStarted())
        assert relay.log_ranges[-1][0] == relay.log_ranges[-1][1]  # halved down to one block, then given up


def test_an_unreachable_endpoint_is_not_taken_for_a_refused_range(consortium: Consortium) -> None:
    client = ChainClient(f"http://127.0.0.1:{free_port()}", request_timeout=1)
    event = client.contract("AllianceRegistry", consortium.deployment.address("AllianceRegistry")).events
    with pytest.raises(ChainUnavailable):
        client.event_logs(event.KeyEpochStarted(), to_block=64)
    assert client.log_window.width is None  # nothing learnt from an outage


def test_followed_logs_ask_only_the_new_blocks(consortium: Consortium) -> None:
    """The key worker read every key envelope and epoch from block 0 on every pass (every 5 s): on a chain a year
    old, millions of blocks each time, or thousands of capped requests."""
    address = consortium.deployment.address("AllianceRegistry")
    started_epochs(consortium, 1)
    with capped_rpc(consortium.rpc_url, 10_000) as relay:
        client = ChainClient(relay.url)
        event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
        assert [int(log["args"]["epoch"]) for log in client.followed_logs(event)] == [2]
        seen = client.block_number()
        started_epochs(consortium, 2)
        assert [int(log["args"]["epoch"]) for log in client.followed_logs(event)] == [2, 3, 4]
        assert relay.log_ranges[-1] == (seen + 1, client.block_number())
        assert client.followed_logs(event) == client.event_logs(event)


def test_followed_logs_read_everything_again_after_the_chain_went_back(consortium: Consortium) -> None:
    """A chain that lost its newest blocks (anvil killed, a reorganisation) and grew past them again: the logs of
    the lost blocks must go, although the block numbers seen before exist again."""
    address = consortium.deployment.address("AllianceRegistry")
    client = ChainClient(consortium.rpc_url)
    event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
    snapshot = client.rpc("evm_snapshot")
    started_epochs(consortium, 2)
    assert [int(log["args"]["epoch"]) for log in client.followed_logs(event)] == [2, 3]
    lost_head = client.block_number()
    client.rpc("evm_revert", [snapshot])
    client.rpc("anvil_mine", [hex(2 * (CAP + 5))])  # past the block the logs were read up to, with no epoch
    assert client.block_number() > lost_head
    assert client.followed_logs(event) == []
    founder = ChainClient(consortium.rpc_url, signer=consortium.banks[0].signer)  # its nonces from the chain again
    assert RegistryClient(founder, address).start_key_epoch() == 2
    assert [int(log["args"]["epoch"]) for log in client.followed_logs(event)] == [2]


def test_followed_logs_read_everything_again_when_the_endpoint_lacks_the_block_they_were_read_up_to(
        consortium: Consortium) -> None:
    """An endpoint without the block the logs were read up to (a node that pruned it, or one behind the node asked
    before, behind a load balancer) answers null for it: web3's BlockNotFound was made a ChainError before the look
    meant to take it as "the chain no longer has it" could see it, and every read of the logs failed."""
    started_epochs(consortium, 1)
    address = consortium.deployment.address("AllianceRegistry")
    with capped_rpc(consortium.rpc_url) as relay:
        client = ChainClient(relay.url)
        event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
        logs = client.followed_logs(event)
        relay.rewrite["eth_getBlockByNumber"] = lambda request, answer: \
            answer if request["params"][0] == "latest" else {**answer, "result": None}
        asked = len(relay.log_ranges)
        assert client.followed_logs(event) == logs
        assert relay.log_ranges[asked][0] == 0  # read from block 0 again


@pytest.mark.parametrize("raw", [False, True], ids=["decoded", "raw"])
def test_logs_an_endpoint_pruned_are_missing_at_once(consortium: Consortium, raw: bool) -> None:
    """geth's history expiry refuses logs of the blocks it dropped ("pruned history unavailable"): each refusal was
    taken for a range too wide and asked again over halved ranges down to one block, then a ChainError that said
    nothing of the endpoint's history."""
    address = consortium.deployment.address("AllianceRegistry")
    with capped_rpc(consortium.rpc_url, 10_000) as relay:
        relay.error = {"code": 4444, "message": "pruned history unavailable"}
        client = ChainClient(relay.url)
        event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
        with pytest.raises(ChainDataMissing) as missing:
            client.raw_logs(address, [event.topic]) if raw else client.event_logs(event)
    assert str(missing.value) == (f"chain RPC at {relay.url} does not have the history asked for: the endpoint may "
                                  "keep recent history only (pruned) or not have synced that far; use an archive node "
                                  "(pruned history unavailable)")
    assert len(relay.log_ranges) == 1


def test_an_error_that_is_no_range_refusal_leaves_the_window_alone(consortium: Consortium) -> None:
    """Every error was taken for a range refusal: an endpoint that failed every eth_getLogs for a while (a node
    still starting, a proxy's rate limit) halved the range down to one block, and that width stayed. Once the
    endpoint answered again, each read asked one block at a time: a million requests on a chain a few weeks old."""
    started_epochs(consortium, 2)
    address = consortium.deployment.address("AllianceRegistry")
    with capped_rpc(consortium.rpc_url, 10_000) as relay:
        client = ChainClient(relay.url)
        event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
        relay.error = {"code": -32000, "message": "header not found"}
        with pytest.raises(ChainError, match="header not found"):
            client.event_logs(event)
        relay.error = None
        asked = len(relay.log_ranges)
        assert [int(log["args"]["epoch"]) for log in client.event_logs(event)] == [2, 3]
        assert relay.log_ranges[asked:] == [(0, client.block_number())]  # one request, as before the outage
        assert client.log_window.width is None


def test_a_passing_error_on_a_short_range_does_not_narrow_the_window(consortium: Consortium) -> None:
    """An error on a range narrower than the endpoint had taken is no range refusal: one on the last, short range of
    a read (a range of 3 blocks behind a window of 8) left the window at 1 block for every later read."""
    with epochs_behind_a_cap(consortium) as (relay, client, event, expected):
        window = client.log_window.width
        assert window is not None and window <= CAP
        head = client.block_number()
        relay.error, relay.error_times = {"code": -32000, "message": "busy"}, 1
        assert client.event_logs(event, from_block=head - 2) == [log for log in expected
                                                                  if log["blockNumber"] >= head - 2]
        assert relay.error_times == 0
        assert client.log_window.width == window


def test_a_lowered_cap_is_learnt(consortium: Consortium) -> None:
    """A width the endpoint took before and refuses in two reads (its cap lowered) is no passing error: the
    narrower width it takes is kept, and the next read is refused nothing."""
    with epochs_behind_a_cap(consortium) as (relay, client, event, expected):
        relay.max_blocks = 2
        assert client.event_logs(event) == expected == client.event_logs(event)
        assert client.log_window.width is not None and client.log_window.width <= 2
        refused = relay.refused
        assert client.event_logs(event) == expected
        assert relay.refused == refused


def test_followed_logs_after_the_chain_went_back_and_regrew_to_the_same_height(consortium: Consortium) -> None:
    """The block the logs were read up to exists again, at the same number, in a chain without the epochs: only
    its hash tells the cache is stale."""
    address = consortium.deployment.address("AllianceRegistry")
    client = ChainClient(consortium.rpc_url)
    event = client.contract("AllianceRegistry", address).events.KeyEpochStarted()
    snapshot = client.rpc("evm_snapshot")
    before = client.block_number()
    started_epochs(consortium, 2)
    assert [int(log["args"]["epoch"]) for log in client.followed_logs(event)] == [2, 3]
    lost_head = client.block_number()
    client.rpc("evm_revert", [snapshot])
    client.rpc("anvil_mine", [hex(lost_head - before)])
    assert client.block_number() == lost_head
    assert client.followed_logs(event) == []
