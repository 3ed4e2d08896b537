"""Merkle trees for anchoring ABS loan pools on chain, compatible with OpenZeppelin's StandardMerkleTree."""

from node.merkle.standard_tree import (
    DUMP_FORMAT,
    MerkleTreeError,
    StandardMerkleTree,
    standard_leaf_hash,
    verify_proof,
)

__all__ = ["DUMP_FORMAT", "MerkleTreeError", "StandardMerkleTree", "standard_leaf_hash", "verify_proof"]
