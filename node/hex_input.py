"""32-byte values as people write them (an indicator, a loan id, an evidence hash): 64 hex digits, optionally
after 0x."""

from __future__ import annotations

import re

_HEX32 = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")


def hex32(text: str) -> bytes | None:
    """The 32 bytes `text` writes, or None for anything else. Matched in full, not left to bytes.fromhex, which skips
    whitespace: hex with a space in it (or after it) was read as the value without it."""
    match = _HEX32.fullmatch(text)
    return None if match is None else bytes.fromhex(match.group(1))
