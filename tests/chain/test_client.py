"""ChainClient against anvil: what happens to the nonce when the chain loses a transaction it was sent."""

from __future__ import annotations

import pytest

from node.chain.client import ChainClient
from node.chain.errors import TransactionTimeout
from node.chain.signer import Signer


def test_a_transaction_the_chain_dropped_leaves_no_nonce_gap(rpc_url: str) -> None:
    # As after an RPC node restarted without its mempool: the transaction never gets a receipt. The nonces handed
    # out locally after it would be queued behind a nonce the chain never mines, and every later transaction of the
    # node (publisher, key worker) would time out until a restart.
    client = ChainClient(rpc_url, signer=Signer.generate(), receipt_timeout=1)
    transfer = {**client.transaction_fields(21_000), "to": client.signer.address, "value": 0}  # zero gas price
    client.rpc("evm_setAutomine", [False])
    try:
        lost = client.send_signed(client.sign(transfer))
        assert client.rpc("anvil_dropTransaction", [lost]) is not None
        with pytest.raises(TransactionTimeout):
            client.wait_for_receipt(lost)
    finally:
        client.rpc("evm_setAutomine", [True])
    receipt = client.send_transaction(transfer)  # takes the lost one's nonce, so it is mined
    assert receipt.status == 1
    assert client.rpc("eth_getTransactionCount", [client.signer.address, "latest"]) == "0x1"
