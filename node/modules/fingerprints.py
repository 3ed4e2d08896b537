"""Local fingerprints of identifiers: HMAC under a key only this bank holds, for velocity counts.

Alliance indicators change with every key epoch and are shared; velocity needs a value that stays put and
that nobody outside the bank can compare, so it is keyed with a key derived from the node's own encryption
key (as report ids are), and kept in the store once that key is replaced (NodeContext.local_key).
"""

from __future__ import annotations

import hmac
import unicodedata
import weakref
from typing import Any

from node.ledger.identifiers import InvalidIdentifier, normalise

PURPOSE = b"alliance-application-fingerprint/v1"

_keys: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def fingerprint_key(node: Any) -> bytes:
    key = _keys.get(node)
    if key is None:
        key = _keys[node] = node.local_key(PURPOSE)
    return key


def canonical_or_none(kind: str, raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return normalise(kind, raw)
    except InvalidIdentifier:
        return None


def fingerprint(key: bytes, kind: str, raw: str) -> bytes:
    """The fingerprint of the canonical form; an invalid value is fingerprinted as typed (NFKC, trimmed)."""
    value = canonical_or_none(kind, raw) or "raw:" + unicodedata.normalize("NFKC", raw).strip().upper()
    return hmac.digest(key, kind.encode() + b"\x00" + value.encode(), "sha256")
