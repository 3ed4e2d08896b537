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
``bytes`` in one list, and from driving pycryptodome's C Keccak directly (:class:`_DirectKeccak`).
"""

from __future__ import annotations

import logging
import operator
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any, Protocol

from Crypto.Hash import keccak as _pycryptodome_keccak

from node.merkle.abi_pack import AbiPackError, RowEncoder

__all__ = ["DUMP_FORMAT", "MerkleTreeError", "StandardMerkleTree", "standard_leaf_hash", "verify_proof"]

DUMP_FORMAT = "standard-v1"
NODE_SIZE = 32
_CHUNK_ROWS = 1 << 15  # leaves encoded per batch: bounds the memory of the encoded rows
_EMPTY_KECCAK = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")

_logger = logging.getLogger(__name__)


class MerkleTreeError(ValueError):
    """Invalid leaves or leaf encoding, a value not in the tree, or a dump that does not check out."""


# --- keccak256 -----------------------------------------------------------------------------------


class _KeccakUnavailable(RuntimeError):
    pass


class _KeccakEngine(Protocol):
    """The hashing a tree needs, in batches so that hot loops stay inside one method."""

    name: str

    def keccak(self, data: bytes) -> bytes: ...

    def leaf_hashes(self, encoded: Sequence[bytes]) -> list[bytes]:
        """``keccak256(keccak256(m))`` for every ABI-encoded leaf ``m``."""
        ...

    def parents(self, children: Sequence[bytes]) -> list[bytes]:
        """The node hash of each pair ``children[2k], children[2k + 1]`` (sorted, concatenated)."""
        ...

    def process_proof(self, leaf: bytes, proof: Iterable[bytes]) -> bytes:
        """The root that ``proof`` leads to from ``leaf``."""
        ...


class _PortableKeccak:
    """keccak256 through pycryptodome's public API: always correct, ~4 µs per hash."""

    name = "pycryptodome"

    def keccak(self, data: bytes) -> bytes:
        return _pycryptodome_keccak.new(data=data, digest_bits=256).digest()

    def leaf_hashes(self, encoded: Sequence[bytes]) -> list[bytes]:
        keccak = self.keccak
        return [keccak(keccak(message)) for message in encoded]

    def parents(self, children: Sequence[bytes]) -> list[bytes]:
        keccak = self.keccak
        return [keccak(a + b if a < b else b + a) for a, b in zip(children[::2], children[1::2], strict=True)]

    def process_proof(self, leaf: bytes, proof: Iterable[bytes]) -> bytes:
        node = leaf
        for sibling in proof:
            node = self.keccak(node + sibling if node < sibling else sibling + node)
        return node


class _DirectKeccak:
    """keccak256 by calling pycryptodome's C sponge through its cffi handle: ~0.7-1.1 µs per hash.

    ``keccak.new(...).digest()`` spends most of its ~4 µs in Python wrappers around the C calls. We call
    ``keccak_reset``/``keccak_absorb``/``keccak_digest`` ourselves, and for messages shorter than the
    136-byte rate (nodes: 64 bytes, the outer leaf hash: 32) we save two of the three calls: a sponge
    that has absorbed L bytes only holds them in its buffer (nothing is permuted yet), and
    ``keccak_digest`` pads and permutes a *copy* of the state. So overwriting those L buffered bytes and
    calling ``keccak_digest`` hashes a new L-byte message. This relies on pycryptodome's private
    ``keccak_state`` layout, so every sponge is checked when created and the engine must match the
    public API on known answers; otherwise :class:`_KeccakUnavailable` sends us to the portable engine.

    One engine per thread (:func:`_engine`): the sponges are scratch space, and cffi releases the GIL
    during each C call.
    """

    name = "pycryptodome-cffi"
    _RATE = 136  # bytes absorbed per permutation for keccak256 (capacity 64)
    _BUF_OFFSET = 200  # keccak_state: uint64_t state[25]; uint8_t buf[200];
    _FIELDS_OFFSET = 400  # unsigned valid_bytes, capacity, rate; uint8_t squeezing, rounds

    def __init__(self) -> None:
        try:
            from Crypto.Util import _raw_api

            lib = _pycryptodome_keccak._raw_keccak_lib  # type: ignore[attr-defined]
            if _raw_api.backend != "cffi":
                raise _KeccakUnavailable("pycryptodome does not use cffi")
            self._ffi: Any = _raw_api.ffi
        except (ImportError, AttributeError) as error:
            raise _KeccakUnavailable(f"pycryptodome internals not found: {error}") from error
        self._lib: Any = lib
        self._reset = lib.keccak_reset
        self._absorb = lib.keccak_absorb
        self._digest = lib.keccak_digest
        self._out = self._ffi.new("uint8_t[32]")
        self._out_view = self._ffi.buffer(self._out)
        self._general = self._new_sponge()
        self._primed: dict[int, tuple[Any, Any, Any, Callable[[], int]]] = {}
        self._self_test()

    def _new_sponge(self) -> Any:
        pointer = self._ffi.new("void **")
        if self._lib.keccak_init(pointer, 64, 24):
            raise _KeccakUnavailable("keccak_init failed")
        return self._ffi.gc(pointer[0], self._lib.keccak_destroy)

    def _primed_sponge(self, length: int) -> tuple[Any, Any, Any, Callable[[], int]]:
        """A sponge holding ``length`` buffered bytes, created once, as a tuple of: the sponge, a writable
        view of those bytes, a pointer to them, and ``keccak_digest`` bound to write its hash to ``_out``
        (binding the four arguments once saves a few percent per hash)."""
        primed = self._primed.get(length)
        if primed is None:
            sponge = self._new_sponge()
            raw = self._ffi.cast("uint8_t *", sponge)
            fields = self._ffi.cast("unsigned *", raw + self._FIELDS_OFFSET)
            flags = raw + self._FIELDS_OFFSET + 12
            layout = (fields[0], fields[1], fields[2], flags[0], flags[1])
            if layout != (0, 64, self._RATE, 0, 24):
                raise _KeccakUnavailable(f"unexpected pycryptodome keccak_state layout {layout}")
            marker = bytes(range(1, length + 1))
            self._absorb(sponge, marker, length)
            view = self._ffi.buffer(raw + self._BUF_OFFSET, length)
            untouched = self._ffi.buffer(raw, self._BUF_OFFSET)[:] == bytes(self._BUF_OFFSET)
            if fields[0] != length or view[:] != marker or not untouched:
                raise _KeccakUnavailable("pycryptodome keccak_absorb does not buffer as expected")
            bound = partial(self._digest, sponge, self._out, NODE_SIZE, 1)
            primed = self._primed[length] = (sponge, view, raw + self._BUF_OFFSET, bound)
        return primed

    def keccak(self, data: bytes) -> bytes:
        length = len(data)
        if 0 < length < self._RATE:
            sponge, view, _, _ = self._primed_sponge(length)
            view[:] = data
        else:
            sponge = self._general
            self._reset(sponge)
            self._absorb(sponge, bytes(data), length)
        self._digest(sponge, self._out, NODE_SIZE, 1)
        return self._out_view[:]

    def leaf_hashes(self, encoded: Sequence[bytes]) -> list[bytes]:
        if not encoded:
            return []
        _, _, outer_buffer, outer_digest = self._primed_sponge(NODE_SIZE)
        digest, out_view = self._digest, self._out_view
        hashes: list[bytes] = []
        append = hashes.append
        length = len(encoded[0])
        if 0 < length < self._RATE and set(map(len, encoded)) == {length}:
            inner, inner_view, _, _ = self._primed_sponge(length)
            inner_digest = partial(digest, inner, outer_buffer, NODE_SIZE, 1)  # lands in the outer sponge
            for message in encoded:
                inner_view[:] = message
                inner_digest()
                outer_digest()
                append(out_view[:])
        else:
            sponge, reset, absorb = self._general, self._reset, self._absorb
            for message in encoded:
                reset(sponge)
                absorb(sponge, message, len(message))
                digest(sponge, outer_buffer, NODE_SIZE, 1)
                outer_digest()
                append(out_view[:])
        return hashes

    def parents(self, children: Sequence[bytes]) -> list[bytes]:
        _, view, _, digest = self._primed_sponge(2 * NODE_SIZE)
        out_view = self._out_view
        nodes: list[bytes] = []
        append = nodes.append
        for a, b in zip(children[::2], children[1::2], strict=True):
            view[:] = a + b if a < b else b + a
            digest()
            append(out_view[:])
        return nodes

    def process_proof(self, leaf: bytes, proof: Iterable[bytes]) -> bytes:
        _, view, _, digest = self._primed_sponge(2 * NODE_SIZE)
        out_view = self._out_view
        node = leaf
        for sibling in proof:
            view[:] = node + sibling if node < sibling else sibling + node
            digest()
            node = out_view[:]
        return node

    def _self_test(self) -> None:
        reference = _PortableKeccak()
        lengths = (1, 31, 32, 33, 64, 135, 136, 160, 300)
        messages = [bytes((7 * i + n) % 256 for i in range(n)) for n in lengths]
        nodes = [reference.keccak(m) for m in messages] + [_EMPTY_KECCAK]
        checks = [
            (self.keccak(b""), _EMPTY_KECCAK),
            ([self.keccak(m) for m in messages], nodes[:-1]),
            (self.leaf_hashes(messages), reference.leaf_hashes(messages)),
            (self.leaf_hashes(messages[-2:-1] * 3), reference.leaf_hashes(messages[-2:-1] * 3)),
            (self.leaf_hashes(messages[:1] * 3), reference.leaf_hashes(messages[:1] * 3)),
            (self.parents(nodes), reference.parents(nodes)),
            (self.process_proof(nodes[0], nodes[1:]), reference.process_proof(nodes[0], nodes[1:])),
        ]
        if any(got != expected for got, expected in checks):
            raise _KeccakUnavailable("direct keccak disagrees with pycryptodome's public API")


_thread_state = threading.local()


def _engine() -> _KeccakEngine:
    """This thread's keccak engine (the fast one unless pycryptodome's internals have changed)."""
    engine: _KeccakEngine | None = getattr(_thread_state, "engine", None)
    if engine is None:
        try:
            engine = _DirectKeccak()
        except _KeccakUnavailable as reason:
            _logger.warning("Merkle trees use the slower portable keccak256: %s", reason)
            engine = _PortableKeccak()
        _thread_state.engine = engine
    return engine


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


def _hash_leaves(encoder: RowEncoder, rows: Sequence[Sequence[Any]], engine: _KeccakEngine) -> list[bytes]:
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


def _fill_internal_nodes(tree: list[bytes], leaf_count: int, engine: _KeccakEngine) -> None:
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
