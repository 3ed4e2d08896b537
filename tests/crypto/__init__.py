"""Tests of node.crypto."""
