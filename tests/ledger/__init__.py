"""Tests of node.ledger."""
