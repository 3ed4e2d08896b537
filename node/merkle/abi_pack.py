"""Fast ``abi.encode`` of many rows of Solidity values, for Merkle tree leaves.

``eth_abi.encode`` costs ~20 µs per row, which alone would take 20 s for a million-loan pool. Leaves of
static types (``uintN``, ``intN``, ``address``, ``bool``, ``bytesN``) are one 32-byte word per field,
so we encode them column by column: when a column holds only canonical Python values (``int`` for
numbers, ``bytes`` of the exact size for ``bytesN``/``address``, ``bool``) it is checked and converted
by C-level builtins (``set(map(type, ...))``, ``min``/``max``, ``map(int.to_bytes, ...)``), with no
Python code per value. Columns holding other accepted forms (hex strings from a JSON dump, decimal
strings, checksummed addresses, ...) take a per-value path; encodings with dynamic types (``string``,
``bytes``, arrays, tuples) fall back to ``eth_abi`` one row at a time.

Values accepted per type (stricter than ``eth_abi``/``@metamask/abi-utils``: sizes must be exact):

- ``uintN``/``intN`` (``uint``/``int`` = 256 bits): ``int`` (not ``bool``) or any ``__index__`` integer,
  or a string of decimal digits (optional ``-``) or ``0x`` hex; must be in range.
- ``address``: 20 bytes, or ``0x`` + 40 hex digits; mixed-case strings must carry a valid EIP-55
  checksum (a failed checksum is almost always a typo).
- ``bool``: ``True``/``False``, or the strings ``"true"``/``"false"`` (as the JS library accepts).
- ``bytesN``: exactly N bytes (``bytes``/``bytearray``/``memoryview``) or ``0x`` + 2N hex digits.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any

import eth_abi
from eth_abi.grammar import ABIType, TupleType, parse
from eth_utils import is_checksum_address

__all__ = ["AbiPackError", "RowEncoder"]

WORD = 32
_ZERO_WORD = bytes(WORD)
_BOOL_WORDS = (_ZERO_WORD, (1).to_bytes(WORD))  # indexed by the bool itself

_NUMBER_TYPE = re.compile(r"(u?)int([1-9][0-9]*)?")
_FIXED_BYTES_TYPE = re.compile(r"bytes([1-9][0-9]?)")
_INT_STRING = re.compile(r"0[xX][0-9a-fA-F]+|-?[0-9]+")
_HEX_STRING = re.compile(r"0x[0-9a-fA-F]*")


class AbiPackError(ValueError):
    """A value (or row) that cannot be encoded; ``row``/``column`` locate it in the input."""

    def __init__(self, message: str, row: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 70:
        text = text[:67] + "..."
    return f"{type(value).__name__} {text}"


def _parse_hex(value: str, size: int, what: str) -> bytes:
    if not _HEX_STRING.fullmatch(value) or len(value) != 2 + 2 * size:
        raise ValueError(f"expected {what} as 0x + {2 * size} hex digits, got {_describe(value)}")
    return bytes.fromhex(value[2:])


class _StaticCodec:
    """Turns the values of one static ABI type into 32-byte words."""

    def __init__(self, abi_type: str) -> None:
        self.abi_type = abi_type

    def column(self, values: Sequence[Any]) -> Sequence[bytes] | None:
        """Words for a column of canonical values (no Python code per value); None if any isn't canonical."""
        raise NotImplementedError

    def word(self, value: Any) -> bytes:
        """The word for any accepted form of value; raises TypeError/ValueError naming the problem."""
        raise NotImplementedError

    def canonical(self, value: Any) -> Any:
        """The value in the form ``eth_abi`` encodes (used for rows with dynamic types)."""
        raise NotImplementedError


class _IntegerCodec(_StaticCodec):
    def __init__(self, abi_type: str, bits: int, signed: bool) -> None:
        super().__init__(abi_type)
        self.min = -(1 << (bits - 1)) if signed else 0
        self.max = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        self._to_word: Callable[[int], bytes] = partial(
            int.to_bytes, length=WORD, byteorder="big", signed=signed
        )

    def column(self, values: Sequence[Any]) -> Sequence[bytes] | None:
        if set(map(type, values)) != {int}:
            return None
        low, high = min(values), max(values)
        if low < self.min or high > self.max:
            return None
        if low >= 0:  # int.to_bytes(v, 32) is twice as fast as a partial with keyword arguments
            return list(map(int.to_bytes, values, repeat(WORD)))
        return list(map(self._to_word, values))

    def canonical(self, value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError(f"expected an integer, got {_describe(value)}")
        if isinstance(value, str):
            if not _INT_STRING.fullmatch(value):
                raise ValueError(f"expected a decimal or 0x-hex integer string, got {_describe(value)}")
            number = int(value, 16) if value[:2] in ("0x", "0X") else int(value, 10)
        else:
            try:
                number = operator.index(value)
            except TypeError:
                raise TypeError(f"expected an integer, got {_describe(value)}") from None
        if not self.min <= number <= self.max:
            raise ValueError(f"{number} is out of range for {self.abi_type} [{self.min}, {self.max}]")
        return number

    def word(self, value: Any) -> bytes:
        return self._to_word(self.canonical(value))


class _AddressCodec(_StaticCodec):
    _PAD = bytes(WORD - 20)

    def column(self, values: Sequence[Any]) -> Sequence[bytes] | None:
        if set(map(type, values)) != {bytes} or set(map(len, values)) != {20}:
            return None
        return list(map(self._PAD.__add__, values))

    def canonical(self, value: Any) -> bytes:
        if isinstance(value, str):
            raw = _parse_hex(value, 20, "an address")
            digits = value[2:]
            if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
                raise ValueError(f"address {value} has an invalid EIP-55 checksum")
            return raw
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            if len(raw) != 20:
                raise ValueError(f"expected a 20-byte address, got {len(raw)} bytes")
            return raw
        raise TypeError(f"expected an address (20 bytes or 0x-hex string), got {_describe(value)}")

    def word(self, value: Any) -> bytes:
        return self._PAD + self.canonical(value)


class _BoolCodec(_StaticCodec):
    def column(self, values: Sequence[Any]) -> Sequence[bytes] | None:
        if set(map(type, values)) != {bool}:
            return None
        return list(map(_BOOL_WORDS.__getitem__, values))

    def canonical(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise TypeError(f"expected a bool, got {_describe(value)}")

    def word(self, value: Any) -> bytes:
        return _BOOL_WORDS[self.canonical(value)]


class _FixedBytesCodec(_StaticCodec):
    def __init__(self, abi_type: str, size: int) -> None:
        super().__init__(abi_type)
        self.size = size
        self._pad = bytes(WORD - size)

    def column(self, values: Sequence[Any]) -> Sequence[bytes] | None:
        if set(map(type, values)) != {bytes} or set(map(len, values)) != {self.size}:
            return None
        if self.size == WORD:
            return values
        return list(map(bytes.__add__, values, repeat(self._pad)))

    def canonical(self, value: Any) -> bytes:
        if isinstance(value, str):
            return _parse_hex(value, self.size, self.abi_type)
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            if len(raw) != self.size:
                raise ValueError(f"expected exactly {self.size} bytes for {self.abi_type}, got {len(raw)}")
            return raw
        raise TypeError(f"expected {self.size} bytes or a 0x-hex string, got {_describe(value)}")

    def word(self, value: Any) -> bytes:
        return self.canonical(value) + self._pad


def static_codec(abi_type: str) -> _StaticCodec | None:
    """The fast codec for a static elementary type, or None (dynamic, composite or invalid type)."""
    if abi_type == "address":
        return _AddressCodec(abi_type)
    if abi_type == "bool":
        return _BoolCodec(abi_type)
    if match := _NUMBER_TYPE.fullmatch(abi_type):
        bits = int(match[2] or 256)
        if bits % 8 == 0 and bits <= 256:
            return _IntegerCodec(abi_type, bits, signed=not match[1])
        return None
    if (match := _FIXED_BYTES_TYPE.fullmatch(abi_type)) and int(match[1]) <= WORD:
        return _FixedBytesCodec(abi_type, int(match[1]))
    return None


def _canonical_dynamic(abi_type: ABIType, value: Any) -> Any:
    """Canonical values for eth_abi, into arrays and tuples too (JSON dumps hold hex/decimal strings)."""
    if abi_type.is_array:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise TypeError(f"expected a list for {abi_type.to_type_str()}, got {_describe(value)}")
        return [_canonical_dynamic(abi_type.item_type, item) for item in value]
    if isinstance(abi_type, TupleType):
        width = len(abi_type.components)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != width:
            raise TypeError(f"expected {width} values for {abi_type.to_type_str()}, got {_describe(value)}")
        return tuple(_canonical_dynamic(c, item) for c, item in zip(abi_type.components, value, strict=True))
    type_str = abi_type.to_type_str()
    codec = static_codec(type_str)
    if codec is not None:
        return codec.canonical(value)
    if type_str == "bytes" and isinstance(value, str):
        if not _HEX_STRING.fullmatch(value) or len(value) % 2:
            raise ValueError(f"expected bytes as a 0x-hex string, got {_describe(value)}")
        return bytes.fromhex(value[2:])
    if type_str == "string" and not isinstance(value, str):
        raise TypeError(f"expected a str, got {_describe(value)}")
    return value


class RowEncoder:
    """``abi.encode(types, row)`` for many rows of one type list (a Merkle leaf encoding)."""

    def __init__(self, types: Sequence[str]) -> None:
        if isinstance(types, str) or not all(isinstance(t, str) for t in types):
            raise AbiPackError(f"leaf encoding must be a list of ABI type strings, got {_describe(types)}")
        self.types = tuple(types)
        if not self.types:
            raise AbiPackError("leaf encoding must name at least one ABI type")
        codecs = [static_codec(t) for t in self.types]
        for abi_type, codec in zip(self.types, codecs, strict=True):
            if codec is None and not eth_abi.is_encodable_type(abi_type):
                raise AbiPackError(f"unsupported ABI type {abi_type!r} in leaf encoding")
        self._column_codecs = [codec for codec in codecs if codec is not None]
        self.is_static = len(self._column_codecs) == len(self.types)
        self._canonicalizers: list[Callable[[Any], Any]] = [
            codec.canonical if codec else partial(_canonical_dynamic, parse(abi_type))
            for abi_type, codec in zip(self.types, codecs, strict=True)
        ]

    def encode_rows(self, rows: Sequence[Sequence[Any]], start: int = 0) -> list[bytes]:
        """The encoding of every row; errors carry ``row = start + position`` of the first bad row."""
        if not rows:
            return []
        self._check_shapes(rows, start)
        if not self.is_static:
            return [self._encode_with_eth_abi(row, start + i) for i, row in enumerate(rows)]
        # itemgetter, not zip(*rows): zip would allocate one GC-tracked iterator per row
        columns = [list(map(itemgetter(j), rows)) for j in range(len(self.types))]
        words: list[Sequence[bytes]] = []
        errors: list[AbiPackError] = []
        for index, (codec, column) in enumerate(zip(self._column_codecs, columns, strict=True)):
            try:
                words.append(self._encode_column(codec, column, index, start))
            except AbiPackError as error:
                errors.append(error)
        if errors:  # report the first bad row, whichever column noticed it
            raise min(errors, key=lambda e: (e.row or 0, e.column or 0))
        return list(map(b"".join, zip(*words, strict=True)))

    def _check_shapes(self, rows: Sequence[Sequence[Any]], start: int) -> None:
        width = len(self.types)
        if set(map(type, rows)) <= {tuple, list} and set(map(len, rows)) <= {width}:
            return
        for i, row in enumerate(rows):
            if isinstance(row, str | bytes | bytearray) or not isinstance(row, Sequence):
                raise AbiPackError(
                    f"expected a sequence of {width} values, got {_describe(row)}", row=start + i
                )
            if len(row) != width:
                raise AbiPackError(
                    f"expected {width} values ({', '.join(self.types)}), got {len(row)}", row=start + i
                )

    @staticmethod
    def _encode_column(codec: _StaticCodec, column: Sequence[Any], index: int, start: int) -> Sequence[bytes]:
        words = codec.column(column)
        if words is not None:
            return words
        try:
            return list(map(codec.word, column))
        except (TypeError, ValueError, OverflowError):
            pass
        for i, value in enumerate(column):  # find the offending value for the message
            try:
                codec.word(value)
            except (TypeError, ValueError, OverflowError) as error:
                raise AbiPackError(
                    f"field {index} ({codec.abi_type}): {error}", row=start + i, column=index
                ) from None
        raise AssertionError("unreachable: a column failed but none of its values did")

    def _encode_with_eth_abi(self, row: Sequence[Any], row_index: int) -> bytes:
        canonical = []
        fields = zip(self.types, self._canonicalizers, row, strict=True)
        for index, (abi_type, canonicalize, value) in enumerate(fields):
            try:
                canonical.append(canonicalize(value))
            except (TypeError, ValueError, OverflowError) as error:
                message = f"field {index} ({abi_type}): {error}"
                raise AbiPackError(message, row=row_index, column=index) from None
        try:
            return eth_abi.encode(list(self.types), canonical)
        except Exception as error:  # eth_abi raises its own EncodingError hierarchy, plus TypeError
            message = f"cannot ABI-encode ({', '.join(self.types)}): {error}"
            raise AbiPackError(message, row=row_index) from None
