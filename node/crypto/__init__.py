"""Cryptographic primitives of the node: keyed indicator hashes, key envelopes, local vault."""
