"""What client text the store keeps may contain: one rule for every store, so bad text is one clear error.

PostgreSQL cannot hold a NUL character (U+0000) in a text column, and no store can encode a lone surrogate (a JSON
"\\ud800", or bytes a command line could not decode) as UTF-8; SQLite takes a NUL. Left to the store, such a write
failed on PostgreSQL only, as a 500 or a traceback, after whatever the request had done before it (a transaction
on chain, say). Names that people and tools pass around take printable characters only, as loan references do.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.errors import InvalidInput

INVALID_CHARACTERS = "invalid_characters"


def storable_text(value: str, *, field: str) -> str:
    """`value` if every store can hold it; InvalidInput (invalid_characters) for a NUL or a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} holds a character that is not valid text (an unpaired surrogate)",
                           code=INVALID_CHARACTERS) from None
    if "\x00" in value:
        raise InvalidInput(f"{field} holds a NUL character", code=INVALID_CHARACTERS)
    return value


def printable_name(value: str, *, field: str) -> str:
    """`value` if it has printable characters only (no NUL, newline, escape or other control or format character,
    no space but the ASCII one), so it shows as it is in listings, logs and command lines; InvalidInput
    (invalid_characters) otherwise. Lengths are the caller's rule."""
    if not value.isprintable():
        raise InvalidInput(f"{field} must have printable characters only (no control characters)",
                           code=INVALID_CHARACTERS)
    return value


# What a message quotes of a value someone gave. Longer values (a file's line, a whole file passed as an argument)
# are cut here: quoted whole, they made an error "line" of megabytes on the terminal, in the API's answer and in
# every log keeping either.
MAX_QUOTED_CHARS = 64


def quoted(value: str) -> str:
    """`value` as a message names it, `repr` style; past MAX_QUOTED_CHARS, its start and its length."""
    return repr(value) if len(value) <= MAX_QUOTED_CHARS else f"{value[:MAX_QUOTED_CHARS]!r}{_cut(value)}"


def excerpt(value: str) -> str:
    """`value` as is, for a message that names it without quotes; cut as `quoted` cuts it."""
    return value if len(value) <= MAX_QUOTED_CHARS else f"{value[:MAX_QUOTED_CHARS]}{_cut(value)}"


def _cut(value: str) -> str:
    return f"… ({len(value):,} characters)"


# A refused request's location (pydantic's `loc`) names schema fields and list positions, and also keys the client
# chose: an unknown field, a key of `bank_inputs`. Such a key may be a customer's identifier typed in the wrong place
# (`{"applicant": {"13800138000": ...}}`), and was echoed in the answer and the terminal. No field name has six
# digits or an "@"; phone, ID, card and USCC numbers and e-mail addresses do, valid or not (most IP addresses too).
MIN_IDENTIFIER_DIGITS = 6


def location_shown(loc: Iterable[str | int]) -> list[str | int]:
    """`loc` as an answer or message shows it: a part that may be an identifier as `{key}`, a long one cut."""
    return [part if isinstance(part, int)
            else "{key}" if "@" in part or sum(ch.isdigit() for ch in part) >= MIN_IDENTIFIER_DIGITS
            else excerpt(part) for part in loc]
