"""The deployment check at start and in /health: the recorded contracts must have this node's functions, not only
code. A node built from newer contract sources than the deployed ones learnt it from a revert without data (an
"unknown revert") at its first call of a function the deployed code lacks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.code_functions import missing_functions
from node.chain.deployment import check_deployment
from node.chain.errors import ContractNotDeployed
from tests.conftest import Consortium


def test_a_deployment_of_this_nodes_sources_passes(consortium: Consortium) -> None:
    check_deployment(ChainClient(consortium.rpc_url), consortium.deployment)


def test_a_contract_lacking_functions_of_this_nodes_artifact_is_named_with_them(consortium: Consortium) -> None:
    """The AssetRegistry's entry pointed at code of other sources (the FraudLedger's here; an AssetRegistry deployed
    before `publishStatuses` was added is the case met in practice)."""
    ledger = consortium.deployment.contracts["FraudLedger"]
    other_sources = replace(consortium.deployment,
                            contracts={**consortium.deployment.contracts, "AssetRegistry": ledger})
    with pytest.raises(ContractNotDeployed) as refused:
        check_deployment(ChainClient(consortium.rpc_url), other_sources)
    message = str(refused.value)
    assert message.startswith(f"AssetRegistry at {ledger.address} was deployed from other contract sources")
    lacking = "it lacks acceptTransfer(uint256), anchorVersion(uint256,bytes32,uint32,uint128,bytes32[]), attest("
    assert lacking in message
    assert " and 16 more; " in message
    assert message.endswith("run the node version that deployed it, or deploy the contracts again")


def test_every_function_of_each_artifact_is_found_in_its_deployed_code(consortium: Consortium) -> None:
    """The selector search finds each function (none of the ABIs' selectors is missed by the PUSH it looks for),
    and a function the code does not have is found missing."""
    client = ChainClient(consortium.rpc_url)
    for name, contract in consortium.deployment.contracts.items():
        abi = load_artifact(name).abi
        code = client.code(contract.address)
        assert missing_functions(abi, code) == []
        absent = {"type": "function", "name": "notThere", "inputs": [{"type": "uint256"}], "outputs": []}
        assert missing_functions([*abi, absent], code) == ["notThere(uint256)"]


def test_a_selector_with_leading_zero_bytes_is_looked_for_as_the_compiler_pushes_it() -> None:
    # 0x00000000 is `wycpnbqcyf()`'s selector, famously; the compiler pushes it with PUSH0 (or PUSH1 0).
    function = {"type": "function", "name": "wycpnbqcyf", "inputs": [], "outputs": []}
    assert missing_functions([function], bytes([0x5F, 0x14])) == []
    assert missing_functions([function], bytes([0x63, 0x01, 0x02, 0x03, 0x04])) == ["wycpnbqcyf()"]
