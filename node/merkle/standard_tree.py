"""OpenZeppelin ``StandardMerkleTree`` (``@openzeppelin/merkle-tree`` 1.0.8) in fast pure Python.

Roots, proofs and ``dump()`` output are byte-identical to the JS library's, so an auditor can check a
loan's proof with the JS tool, with :func:`verify_proof`, or on chain with OpenZeppelin's
``MerkleProof.verify(proof, root, leaf)``. The rules, as in the library:

- leaf = ``keccak256(keccak256(abi.encode(types, values)))`` (hashing twice rules out second-preimage
  attacks where a 64-byte leaf encoding poses as an internal node);
- leaves are sorted by hash (stable, so duplicates keep their order);
- the tree is a flat array of ``2n - 1`` nodes: node ``i`` has children ``2i + 1`` and ``2i + 2``, the
  sorted leaves fill the end of the array in reverse order, and an internal node is the keccak256 of
  its two children concatenated smaller-first (which is what makes ``MerkleProof.verify`` work without
  left/right flags).

Speed comes from encoding leaves column-wise (:mod:`node.merkle.abi_pack`), from keeping nodes as plain
``bytes`` in one list, and from safe-pysha3's C keccak256 (:class:`_Keccak`).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sha3 import keccak_256

from node.merkle.abi_pack import AbiPackError, RowEncoder

__all__ = ["DUMP_FORMAT", "MerkleTreeError", "StandardMerkleTree", "standard_leaf_hash", "verify_proof"]

DUMP_FORMAT = "standard-v1"
NODE_SIZE = 32
_CHUNK_ROWS = 1 << 15  # leaves encoded per batch: bounds the memory of the encoded rows


class MerkleTreeError(ValueError):
    """Invalid leaves or leaf encoding, a value not in the tree, or a dump that does not check out."""


# --- keccak256 -----------------------------------------------------------------------------------


class _Keccak:
    """keccak256 from safe-pysha3's C implementation (the backend eth-hash offers beside pycryptodome):
    ~0.5 µs a hash, where pycryptodome's ``keccak.new(...).digest()`` spends ~3.5 µs in Python wrappers
    around its C calls. Batches keep the hot loops inside one method with the hash bound locally."""

    name = "safe-pysha3"

    def keccak(self, data: bytes) -> bytes:
        return keccak_256(data).digest()

    def leaf_hashes(self, encoded: Sequence[bytes]) -> list[bytes]:
        """``keccak256(keccak256(m))`` for every ABI-encoded leaf ``m``."""
        hash_ = keccak_256
        return [hash_(hash_(message).digest()).digest() for message in encoded]

    def parents(self, children: Sequence[bytes]) -> list[bytes]:
        """The node hash of each pair ``children[2k], children[2k + 1]`` (sorted, concatenated)."""
        hash_ = keccak_256
        return [hash_(a + b if a < b else b + a).digest() for a, b in zip(children[::2], children[1::2], strict=True)]

    def process_proof(self, leaf: bytes, proof: Iterable[bytes]) -> bytes:
        """The root that ``proof`` leads to from ``leaf``."""
        node = leaf
        for sibling in proof:
            node = keccak_256(node + sibling if node < sibling else sibling + node).digest()
        return node


_KECCAK = _Keccak()


def _engine() -> _Keccak:
    return _KECCAK


# --- leaves --------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _cached_encoder(types: tuple[str, ...]) -> RowEncoder:
    return RowEncoder(types)


def _encoder(leaf_encoding: Sequence[str]) -> RowEncoder:
    if isinstance(leaf_encoding, str) or not isinstance(leaf_encoding, Sequence):
        raise MerkleTreeError(f"leaf encoding must be a list of ABI types, got {leaf_encoding!r}")
    try:
        return _cached_encoder(tuple(leaf_encoding))
    except (AbiPackError, TypeError) as error:
        raise MerkleTreeError(str(error)) from None


def _as_rows(values: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise MerkleTreeError(f"values must be a list of leaves, got {type(values).__name__}")
    rows = values if isinstance(values, list | tuple) else list(values)
    if not rows:
        raise MerkleTreeError("Expected non-zero number of leaves")
    return rows


def _hash_leaves(encoder: RowEncoder, rows: Sequence[Sequence[Any]], engine: _Keccak) -> list[bytes]:
    hashes: list[bytes] = []
    for start in range(0, len(rows), _CHUNK_ROWS):
        try:
            encoded = encoder.encode_rows(rows[start : start + _CHUNK_ROWS], start)
        except AbiPackError as error:
            raise MerkleTreeError(f"leaf {error.row}: {error}") from None
        hashes += engine.leaf_hashes(encoded)
    return hashes


def _leaf_hash(encoder: RowEncoder, values: Sequence[Any]) -> bytes:
    try:
        encoded = encoder.encode_rows([values])
    except AbiPackError as error:
        raise MerkleTreeError(f"invalid leaf: {error}") from None
    return _engine().leaf_hashes(encoded)[0]


def standard_leaf_hash(leaf_encoding: Sequence[str], values: Sequence[Any]) -> bytes:
    """``keccak256(keccak256(abi.encode(leaf_encoding, values)))``: the leaf hash a proof starts from."""
    return _leaf_hash(_encoder(leaf_encoding), values)


# --- tree ----------------------------------------------------------------------------------------


def _fill_internal_nodes(tree: list[bytes], leaf_count: int, engine: _Keccak) -> None:
    """Compute ``tree[0 : leaf_count - 1]`` from the leaves, in blocks whose children are all known.

    Nodes ``lo..hi`` with ``lo = ceil(hi / 2)`` only have children above ``hi``, so each block is one
    ``engine.parents`` call over a contiguous slice (the blocks roughly halve: ~log2(n) calls).
    """
    hi = leaf_count - 2
    while hi >= 0:
        lo = (hi + 1) // 2
        tree[lo : hi + 1] = engine.parents(tree[2 * lo + 1 : 2 * hi + 3])
        hi = lo - 1


def _node_from_hex(text: Any, where: str) -> bytes:
    if isinstance(text, str) and len(text) == 2 + 2 * NODE_SIZE and text[:2] == "0x":
        try:
            node = bytes.fromhex(text[2:])
        except ValueError:
            pass
        else:
            if len(node) == NODE_SIZE:
                return node
    raise MerkleTreeError(f"{where}: expected a 0x-prefixed 32-byte hex string, got {text!r}")


def _to_json(value: Any) -> Any:
    """The JSON form of a leaf value: bytes as 0x-hex, integers as decimal strings (no float rounding)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return str(int(value))  # int(): an IntEnum status must dump as its number
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Sequence):
        return [_to_json(item) for item in value]
    try:
        return str(operator.index(value))
    except TypeError:
        raise MerkleTreeError(f"cannot represent {value!r} in a JSON dump") from None


class StandardMerkleTree:
    """A Merkle tree over ABI-encoded leaves, interchangeable with OpenZeppelin's ``StandardMerkleTree``.

    Build with :meth:`of` or :meth:`load`. Value indices (for :meth:`proof` and in dumps) are positions in
    the original ``values`` list, as in the JS library. Instances are immutable and thread-safe.
    """

    __slots__ = ("_encoder", "_lookup", "_tree", "_tree_index", "_values")

    def __init__(
        self,
        encoder: RowEncoder,
        tree: list[bytes],
        values: tuple[tuple[Any, ...], ...],
        tree_index: array[int],
    ) -> None:
        """Internal: use :meth:`of` or :meth:`load`."""
        self._encoder = encoder
        self._tree = tree
        self._values = values
        self._tree_index = tree_index
        self._lookup: dict[bytes, int] | None = None

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]) -> StandardMerkleTree:
        """Build the tree of ``values`` (one sequence per leaf) encoded as ``leaf_encoding``."""
        encoder = _encoder(leaf_encoding)
        rows = _as_rows(values)
        engine = _engine()
        hashes = _hash_leaves(encoder, rows, engine)
        count = len(hashes)
        order = sorted(range(count), key=hashes.__getitem__)
        tree: list[bytes] = [b""] * (count - 1)
        tree += map(hashes.__getitem__, reversed(order))  # sorted position p -> tree index 2n - 2 - p
        del hashes
        tree_index = array("q", bytes(8 * count))
        last = 2 * count - 2
        for position, value_index in enumerate(order):
            tree_index[value_index] = last - position
        del order
        _fill_internal_nodes(tree, count, engine)
        return cls(encoder, tree, tuple(map(tuple, rows)), tree_index)

    @staticmethod
    def root_of(values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]) -> bytes:
        """The root ``of(values, leaf_encoding)`` has, without keeping the tree: for a caller that only checks
        a root, it skips the proof bookkeeping (about a quarter of the time of ``of``)."""
        engine = _engine()
        hashes = _hash_leaves(_encoder(leaf_encoding), _as_rows(values), engine)
        count = len(hashes)
        hashes.sort(reverse=True)  # sorted position p -> tree index 2n - 2 - p, as in `of`
        tree = [b""] * (count - 1) + hashes
        _fill_internal_nodes(tree, count, engine)
        return tree[0]

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StandardMerkleTree:
        """Rebuild a tree from a ``dump()`` of this class or of the JS library, checking every hash."""
        if not isinstance(data, Mapping) or data.get("format") != DUMP_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise MerkleTreeError(f"Unknown format {found!r}, expected {DUMP_FORMAT!r}")
        if data.get("leafEncoding") is None:
            raise MerkleTreeError("Expected leaf encoding")
        encoder = _encoder(data["leafEncoding"])
        nodes, entries = data.get("tree"), data.get("values")
        if not isinstance(nodes, list) or not isinstance(entries, list) or not entries:
            raise MerkleTreeError("a dump needs a non-empty 'values' list and a 'tree' list")
        count = len(entries)
        if len(nodes) != 2 * count - 1:
            expected = 2 * count - 1
            raise MerkleTreeError(f"a tree of {count} values has {expected} nodes, the dump has {len(nodes)}")
        tree = [_node_from_hex(text, f"tree[{i}]") for i, text in enumerate(nodes)]
        rows, tree_index = cls._parse_entries(entries)
        hashes = _hash_leaves(encoder, rows, _engine())
        if list(map(tree.__getitem__, tree_index)) != hashes:
            bad = next(i for i, (t, h) in enumerate(zip(tree_index, hashes, strict=True)) if tree[t] != h)
            raise MerkleTreeError(f"leaf {bad}: value does not hash to tree node {tree_index[bad]}")
        rebuilt = [b""] * (count - 1) + tree[count - 1 :]
        _fill_internal_nodes(rebuilt, count, _engine())
        if rebuilt != tree:
            bad = next(i for i, (a, b) in enumerate(zip(rebuilt, tree, strict=True)) if a != b)
            raise MerkleTreeError(f"Merkle tree is invalid: node {bad} is not the hash of its children")
        return cls(encoder, tree, tuple(map(tuple, rows)), tree_index)

    @staticmethod
    def _parse_entries(entries: list[Any]) -> tuple[list[Sequence[Any]], array[int]]:
        count = len(entries)
        rows: list[Sequence[Any]] = []
        tree_index = array("q")
        for i, entry in enumerate(entries):
            value = entry.get("value") if isinstance(entry, Mapping) else None
            index = entry.get("treeIndex") if isinstance(entry, Mapping) else None
            if not isinstance(value, list | tuple):
                raise MerkleTreeError(
                    f"values[{i}]: expected {{'value': [...], 'treeIndex': n}}, not {entry!r}"
                )
            if type(index) is not int or not count - 1 <= index <= 2 * count - 2:
                raise MerkleTreeError(
                    f"values[{i}]: treeIndex {index!r} is not a leaf of a {count}-leaf tree"
                )
            rows.append(value)
            tree_index.append(index)
        if len(set(tree_index)) != count:
            raise MerkleTreeError("two values share a treeIndex")
        return rows, tree_index

    @property
    def root(self) -> bytes:
        return self._tree[0]

    @property
    def root_hex(self) -> str:
        return "0x" + self._tree[0].hex()

    @property
    def leaf_encoding(self) -> tuple[str, ...]:
        return self._encoder.types

    @property
    def values(self) -> tuple[tuple[Any, ...], ...]:
        """The leaves' values, in the original order."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        encoding = list(self.leaf_encoding)
        return f"StandardMerkleTree(root={self.root_hex}, leaves={len(self)}, encoding={encoding})"

    def leaf_hash(self, values: Sequence[Any]) -> bytes:
        return _leaf_hash(self._encoder, values)

    def proof(self, index_or_values: int | Sequence[Any]) -> list[bytes]:
        """The sibling hashes from a leaf up to the root, as ``MerkleProof.verify`` takes them.

        ``index_or_values`` is the leaf's position in the original values list, or its values (if the
        same values appear twice, the proof is for the last occurrence, as in the JS library).
        """
        tree, node = self._tree, self._tree_index[self._value_index(index_or_values)]
        proof = []
        while node > 0:
            proof.append(tree[node + 1] if node & 1 else tree[node - 1])
            node = (node - 1) >> 1
        return proof

    def _value_index(self, index_or_values: int | Sequence[Any]) -> int:
        if isinstance(index_or_values, int) and not isinstance(index_or_values, bool):
            if not 0 <= index_or_values < len(self._values):
                raise MerkleTreeError(f"Index out of bounds: {index_or_values} (tree has {len(self)} values)")
            return index_or_values
        values: Any = index_or_values  # a bool lands here too, and is rejected as "not a sequence"
        leaf = _leaf_hash(self._encoder, values)
        if self._lookup is None:  # built on first use; later duplicates win, as in the JS library
            tree = self._tree
            self._lookup = {tree[node]: index for index, node in enumerate(self._tree_index)}
        index = self._lookup.get(leaf)
        if index is None:
            raise MerkleTreeError("Leaf is not in tree")
        return index

    def dump(self) -> dict[str, Any]:
        """The JS library's ``standard-v1`` JSON shape (bytes as 0x-hex, integers as decimal strings)."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._encoder.types),
            "tree": ["0x" + node.hex() for node in self._tree],
            "values": [
                {"value": [_to_json(item) for item in row], "treeIndex": node}
                for row, node in zip(self._values, self._tree_index, strict=True)
            ],
        }


def verify_proof(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` leads from the leaf hash ``leaf`` to ``root``: OpenZeppelin's ``MerkleProof.verify``.

    Needs no tree: an auditor holding the published root, a loan's values (hashed with
    :func:`standard_leaf_hash`) and its proof can check it. Malformed input (anything but 32-byte
    ``bytes``) raises :class:`MerkleTreeError` rather than quietly returning False.
    """
    if not isinstance(proof, list | tuple):
        proof = list(proof)
    try:
        well_formed = (
            isinstance(root, bytes | bytearray)
            and isinstance(leaf, bytes | bytearray)
            and len(root) == NODE_SIZE
            and len(leaf) == NODE_SIZE
            and set(map(len, proof)) <= {NODE_SIZE}
        )
        if well_formed:
            return _engine().process_proof(bytes(leaf), proof) == root
    except TypeError:
        pass
    raise MerkleTreeError("root, leaf and every proof element must be 32-byte bytes")
