"""Tests of the Merkle tree module (node.merkle)."""
