"""StandardMerkleTree: byte-identical to OpenZeppelin's JS library, proofs that verify, strict inputs.

The cross-check runs tests/merkle/oz_reference.mjs (the JS library, from node_modules) once for every
case below. Without node the JS checks skip locally and fail in CI; the hard-coded known-answer vector
(computed with the JS library) still checks the Python side on its own.
"""

from __future__ import annotations

import enum
import json
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from Crypto.Hash import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from node.merkle import MerkleTreeError, StandardMerkleTree, standard_leaf_hash, verify_proof
from node.merkle.abi_pack import RowEncoder
from node.merkle.standard_tree import _engine

REPO_ROOT = Path(__file__).resolve().parents[2]
OZ_SCRIPT = Path(__file__).with_name("oz_reference.mjs")
IN_CI = os.environ.get("CI", "").lower() == "true"

LOAN = [
    "bytes32",
    "bytes32",
    "uint256",
    "uint256",
    "uint8",
]  # loan id hash, borrower hash, principal, maturity, status
MIXED = ["address", "bool", "int64", "bytes4", "uint"]
DYNAMIC = ["string", "bytes", "uint256[]", "address"]


def to_json(value: Any) -> Any:
    """How values travel to the JS library (and how both libraries dump them)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return [to_json(item) for item in value]


def hexes(nodes: list[bytes]) -> list[str]:
    return ["0x" + node.hex() for node in nodes]


def loans(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    return [
        (
            rng.randbytes(32),
            rng.randbytes(32),
            rng.randrange(10**27),
            1_700_000_000 + rng.randrange(10**9),
            rng.randrange(5),
        )
        for _ in range(count)
    ]


def mixed_rows(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    return [
        (
            rng.randbytes(20),
            rng.random() < 0.5,
            rng.randrange(-(2**63), 2**63),
            rng.randbytes(4),
            rng.getrandbits(256),
        )
        for _ in range(count)
    ]


def dynamic_rows(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    return [
        (
            f"loan-{i}-é" * rng.randrange(3),
            rng.randbytes(rng.randrange(70)),
            [rng.getrandbits(200) for _ in range(rng.randrange(4))],
            rng.randbytes(20),
        )
        for i in range(count)
    ]


def short_rows(rng: random.Random, encoding: list[str], count: int) -> list[tuple[Any, ...]]:
    make = {
        "bytes32": lambda: rng.randbytes(32),
        "uint256": lambda: rng.getrandbits(256),
        "address": lambda: rng.randbytes(20),
        "bool": lambda: rng.random() < 0.5,
    }
    return [tuple(make[abi_type]() for abi_type in encoding) for _ in range(count)]


def make_cases() -> list[dict[str, Any]]:
    rng = random.Random(20240611)
    cases = [
        {"id": f"loans-{n}", "encoding": LOAN, "values": loans(rng, n), "value_proofs": [0, n - 1]}
        for n in (1, 2, 3, 7, 100, 1000)
    ]
    cases.append(
        {"id": "mixed-static-50", "encoding": MIXED, "values": mixed_rows(rng, 50), "value_proofs": [3]}
    )
    cases.append(
        {"id": "dynamic-20", "encoding": DYNAMIC, "values": dynamic_rows(rng, 20), "value_proofs": [5]}
    )
    base = loans(rng, 4)
    with_duplicates = [base[0], base[1], base[0], base[2], base[1], base[0], base[3]]
    cases.append(
        {"id": "duplicates-7", "encoding": LOAN, "values": with_duplicates, "value_proofs": [0, 1, 3, 6]}
    )
    # Encodings shorter than keccak's 136-byte rate take another path through the fast keccak engine.
    for encoding in (["bytes32"], ["uint256", "address"], ["address", "uint256", "bytes32", "bool"]):
        rows = short_rows(rng, encoding, 9)
        cases.append(
            {"id": "short-" + "-".join(encoding), "encoding": encoding, "values": rows, "value_proofs": [1]}
        )
    return cases


CASES = make_cases()


@pytest.fixture(scope="module")
def oz_results() -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node is required in CI to cross-check against @openzeppelin/merkle-tree")
        pytest.skip("node is not installed: the OpenZeppelin cross-check cannot run")
    request = [
        {
            "leafEncoding": case["encoding"],
            "values": to_json(case["values"]),
            "proofs": "all",
            "valueProofs": case["value_proofs"],
        }
        for case in CASES
    ]
    run = subprocess.run(
        [node, str(OZ_SCRIPT)],
        input=json.dumps(request),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"oz_reference.mjs failed:\n{run.stderr}"
    results: list[dict[str, Any]] = json.loads(run.stdout)
    return results


@pytest.mark.parametrize("case_index", range(len(CASES)), ids=[case["id"] for case in CASES])
def test_matches_openzeppelin(oz_results: list[dict[str, Any]], case_index: int) -> None:
    case, expected = CASES[case_index], oz_results[case_index]
    assert expected["verified"], "the JS library rejected its own proofs"
    tree = StandardMerkleTree.of(case["values"], case["encoding"])

    assert tree.root_hex == expected["root"]
    assert "0x" + StandardMerkleTree.root_of(case["values"], case["encoding"]).hex() == expected["root"]
    assert len(tree) == len(case["values"])
    for index, proof in expected["proofs"].items():
        assert hexes(tree.proof(int(index))) == proof, f"proof of value {index}"
    for index, proof in expected["valueProofs"].items():
        assert hexes(tree.proof(case["values"][int(index)])) == proof, f"proof looked up by values {index}"
    assert tree.dump() == expected["dump"]

    loaded = StandardMerkleTree.load(json.loads(json.dumps(expected["dump"])))
    assert loaded.root == tree.root
    assert loaded.dump() == expected["dump"]
    assert [loaded.proof(i) for i in range(len(loaded))] == [tree.proof(i) for i in range(len(tree))]


# Computed once with @openzeppelin/merkle-tree 1.0.8 (tests/merkle/oz_reference.mjs).
KAT_VALUES = [
    ("0x" + "11" * 32, "0x" + "aa" * 32, 250_000_000_000, 1_767_225_600, 1),
    ("0x" + "22" * 32, "0x" + "bb" * 32, 10**24, 1_798_761_600, 0),
    ("0x" + "33" * 32, "0x" + "cc" * 32, 0, 1_830_297_600, 4),
]
KAT_ROOT = "0xc8b6988aa060be231c7aa26d793b5b375b3fc791a80b53d47c4d8f4830582025"
KAT_LEAF_0 = "0x7b639b9a4629f9352142289f1bcc5c87e73db4dafdf700b0cc12d6c8a7de3db1"
KAT_PROOF_0 = [
    "0x80ad49549cebe84152e5ec54bfa44cb87ab8c489f12f691902bc7fc87fb4d471",
    "0xc2902d0355a86fecfa32316cf73caf67d599bc86957a705369caf8e39cc0457e",
]
KAT_MIXED_ROOT = "0x12676b13a752dbff44c92b205b885be3d1cd71e1cff1a73f9e2398e708b09fe0"


def test_known_answer_vector() -> None:
    as_bytes = [(bytes.fromhex(a[2:]), bytes.fromhex(b[2:]), *rest) for a, b, *rest in KAT_VALUES]
    for values in (KAT_VALUES, as_bytes):
        tree = StandardMerkleTree.of(values, LOAN)
        assert tree.root_hex == KAT_ROOT
        assert hexes(tree.proof(0)) == KAT_PROOF_0
        assert "0x" + tree.leaf_hash(values[0]).hex() == KAT_LEAF_0
        assert standard_leaf_hash(LOAN, values[0]) == tree.leaf_hash(values[0])
        assert verify_proof(
            tree.root, bytes.fromhex(KAT_LEAF_0[2:]), [bytes.fromhex(p[2:]) for p in KAT_PROOF_0]
        )


def test_known_answer_vector_for_other_static_types() -> None:
    """Checksummed address, bool, negative int64, bytes4 and uint (= uint256) at their limits."""
    values = [
        ("0x52908400098527886E0F7030069857D2E4169EE7", True, -5, bytes.fromhex("deadbeef"), 2**256 - 1),
        (bytes(19) + b"\x01", False, -(2**63), "0x00000001", 0),
    ]
    assert StandardMerkleTree.of(values, MIXED).root_hex == KAT_MIXED_ROOT


def test_accepts_json_forms_of_values() -> None:
    rng = random.Random(7)
    rows = mixed_rows(rng, 20)
    as_json = [[to_json(v) for v in row] for row in rows]
    as_json[0][1] = "true" if rows[0][1] else "false"
    as_json[1][4] = hex(rows[1][4])
    assert StandardMerkleTree.of(as_json, MIXED).root == StandardMerkleTree.of(rows, MIXED).root


# --- proofs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_100() -> StandardMerkleTree:
    return StandardMerkleTree.of(loans(random.Random(3), 100), LOAN)


def test_every_proof_verifies_and_any_altered_node_fails(tree_100: StandardMerkleTree) -> None:
    root = tree_100.root
    for index, values in enumerate(tree_100.values):
        leaf, proof = tree_100.leaf_hash(values), tree_100.proof(index)
        assert tree_100.proof(values) == proof
        assert verify_proof(root, leaf, proof)
        for position in range(len(proof)):
            altered = list(proof)
            altered[position] = bytes([proof[position][0] ^ 0x01]) + proof[position][1:]
            assert not verify_proof(root, leaf, altered)
        assert not verify_proof(root, leaf, proof[:-1])
        assert not verify_proof(bytes(32), leaf, proof)


def test_wrong_leaf_fails(tree_100: StandardMerkleTree) -> None:
    proof = tree_100.proof(0)
    other = tree_100.leaf_hash(tree_100.values[1])
    assert not verify_proof(tree_100.root, other, proof)
    tampered = list(tree_100.values[0])
    tampered[2] += 1  # the principal
    assert not verify_proof(tree_100.root, tree_100.leaf_hash(tampered), proof)


def test_proof_for_value_not_in_tree_raises(tree_100: StandardMerkleTree) -> None:
    absent = (bytes(32), bytes(32), 1, 2, 3)
    with pytest.raises(MerkleTreeError, match="not in tree"):
        tree_100.proof(absent)
    for index in (-1, 100, 10**6):
        with pytest.raises(MerkleTreeError, match="out of bounds"):
            tree_100.proof(index)


def test_single_leaf_tree() -> None:
    values = loans(random.Random(1), 1)
    tree = StandardMerkleTree.of(values, LOAN)
    assert tree.proof(0) == []
    assert tree.root == standard_leaf_hash(LOAN, values[0])
    assert verify_proof(tree.root, tree.root, [])


@pytest.mark.parametrize(
    "root, leaf, proof",
    [
        (b"\x00" * 31, b"\x00" * 32, []),
        (b"\x00" * 32, "00" * 32, []),
        (b"\x00" * 32, b"\x00" * 32, [b"\x00" * 33]),
        (b"\x00" * 32, b"\x00" * 32, ["0" * 32]),
        (b"\x00" * 32, b"\x00" * 32, [7]),
    ],
)
def test_verify_proof_rejects_malformed_input(root: Any, leaf: Any, proof: Any) -> None:
    with pytest.raises(MerkleTreeError, match="32-byte"):
        verify_proof(root, leaf, proof)


# --- input validation -----------------------------------------------------------------------------


def good_loan(i: int) -> list[Any]:
    return [bytes([i]) * 32, bytes([i + 1]) * 32, 1000 + i, 1_800_000_000, 1]


@pytest.mark.parametrize(
    "position, field, bad, message",
    [
        (2, 2, -1, r"leaf 2: field 2 \(uint256\).*out of range"),
        (4, 4, 256, r"leaf 4: field 4 \(uint8\).*out of range"),
        (1, 2, 2**256, r"leaf 1: field 2 \(uint256\)"),
        (3, 2, True, r"leaf 3: field 2 \(uint256\): expected an integer"),
        (5, 3, 1.5, r"leaf 5: field 3 \(uint256\): expected an integer"),
        (0, 0, b"\x01" * 31, r"leaf 0: field 0 \(bytes32\): expected exactly 32 bytes"),
        (6, 1, "0x" + "ab" * 31, r"leaf 6: field 1 \(bytes32\)"),
        (2, 0, "11" * 32, r"leaf 2: field 0 \(bytes32\)"),
        (1, 4, "0x100", r"leaf 1: field 4 \(uint8\): 256 is out of range"),
    ],
)
def test_invalid_values_name_the_leaf(position: int, field: int, bad: Any, message: str) -> None:
    rows = [good_loan(i) for i in range(8)]
    rows[position][field] = bad
    with pytest.raises(MerkleTreeError, match=message):
        StandardMerkleTree.of(rows, LOAN)


@pytest.mark.parametrize(
    "bad, message",
    [
        (bytes(19), "20-byte address, got 19"),
        ("0x" + "ab" * 19, "40 hex digits"),
        ("0x52908400098527886e0F7030069857D2E4169EE7", "EIP-55 checksum"),
        (12345, "expected an address"),
    ],
)
def test_invalid_addresses(bad: Any, message: str) -> None:
    rows = mixed_rows(random.Random(5), 4)
    rows[3] = (bad, *rows[3][1:])
    with pytest.raises(MerkleTreeError, match=f"leaf 3: field 0 \\(address\\).*{message}"):
        StandardMerkleTree.of(rows, MIXED)


def test_wrong_arity_and_shape() -> None:
    rows: list[Any] = [good_loan(i) for i in range(5)]
    rows[3] = rows[3][:4]
    with pytest.raises(MerkleTreeError, match=r"leaf 3: expected 5 values .*got 4"):
        StandardMerkleTree.of(rows, LOAN)
    rows[3] = "not a row"
    with pytest.raises(MerkleTreeError, match=r"leaf 3: expected a sequence of 5 values"):
        StandardMerkleTree.of(rows, LOAN)


def test_reports_the_first_bad_leaf_across_columns() -> None:
    rows = [good_loan(i) for i in range(10)]
    rows[7][0] = b"short"
    rows[4][4] = 999
    with pytest.raises(MerkleTreeError, match=r"^leaf 4: field 4"):
        StandardMerkleTree.of(rows, LOAN)


def test_leaf_index_is_global_across_encoding_batches() -> None:
    rows = [list(loan) for loan in loans(random.Random(2), 40_000)]  # leaves are encoded 32,768 at a time
    rows[39_999][3] = -7
    with pytest.raises(MerkleTreeError, match=r"^leaf 39999: field 3"):
        StandardMerkleTree.of(rows, LOAN)


def test_int_subclasses_are_numbers() -> None:
    class Status(enum.IntEnum):
        ACTIVE = 1

    rows = [good_loan(i) for i in range(3)]
    plain = StandardMerkleTree.of(rows, LOAN)
    rows[1][4] = Status.ACTIVE
    with_enum = StandardMerkleTree.of(rows, LOAN)
    assert with_enum.root == plain.root
    assert with_enum.dump() == plain.dump()


def test_empty_values_and_bad_encodings() -> None:
    for build in (StandardMerkleTree.of, StandardMerkleTree.root_of):
        with pytest.raises(MerkleTreeError, match="non-zero number of leaves"):
            build([], LOAN)
    for encoding in (["uint7"], ["uint264"], ["bytes33"], ["money"], [], "uint256", [256]):
        with pytest.raises(MerkleTreeError):
            StandardMerkleTree.of([[1]], encoding)  # type: ignore[arg-type]
    assert issubclass(MerkleTreeError, ValueError)


def test_invalid_leaf_for_standard_leaf_hash() -> None:
    with pytest.raises(MerkleTreeError, match="invalid leaf: field 0"):
        standard_leaf_hash(["uint8"], [-1])


# --- dumps ----------------------------------------------------------------------------------------


def test_load_rejects_tampered_dumps(tree_100: StandardMerkleTree) -> None:
    def tampered(change: Any) -> dict[str, Any]:
        dump = json.loads(json.dumps(tree_100.dump()))
        change(dump)
        return dump

    def flip(text: str) -> str:
        return text[:-1] + ("0" if text[-1] != "0" else "1")

    cases = {
        "Unknown format": lambda d: d.update(format="standard-v2"),
        "Expected leaf encoding": lambda d: d.pop("leafEncoding"),
        "leaf 5: value does not hash": lambda d: d["values"][5]["value"].__setitem__(2, "12345"),
        "is not the hash of its children": lambda d: d["tree"].__setitem__(3, flip(d["tree"][3])),
        "does not hash to tree node": lambda d: d["tree"].__setitem__(150, flip(d["tree"][150])),
        "share a treeIndex": lambda d: d["values"][1].update(treeIndex=d["values"][0]["treeIndex"]),
        "is not a leaf": lambda d: d["values"][1].update(treeIndex=3),
        "has 199 nodes, the dump has 198": lambda d: d["tree"].pop(),
        r"tree\[7\]: expected a 0x-prefixed": lambda d: d["tree"].__setitem__(7, d["tree"][7][2:]),
    }
    assert StandardMerkleTree.load(tampered(lambda d: None)).root == tree_100.root
    for message, change in cases.items():
        with pytest.raises(MerkleTreeError, match=message):
            StandardMerkleTree.load(tampered(change))


# --- encoder and keccak engines -------------------------------------------------------------------

_SIZES = list(range(8, 257, 8))
_STATIC_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "address": st.binary(min_size=20, max_size=20),
    "bool": st.booleans(),
    **{f"uint{n}": st.integers(0, 2**n - 1) for n in _SIZES},
    **{f"int{n}": st.integers(-(2 ** (n - 1)), 2 ** (n - 1) - 1) for n in _SIZES},
    **{f"bytes{n}": st.binary(min_size=n, max_size=n) for n in range(1, 33)},
}


@st.composite
def static_rows(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    types = draw(st.lists(st.sampled_from(sorted(_STATIC_VALUES)), min_size=1, max_size=6))
    rows = draw(st.lists(st.tuples(*(_STATIC_VALUES[t] for t in types)).map(list), min_size=1, max_size=4))
    return types, rows


@settings(max_examples=150, deadline=None)
@given(static_rows())
def test_fast_encoder_matches_eth_abi(case: tuple[list[str], list[list[Any]]]) -> None:
    types, rows = case
    assert RowEncoder(types).encode_rows(rows) == [eth_abi.encode(types, row) for row in rows]


def test_keccak_engine_matches_pycryptodome() -> None:
    """The tree hashes with safe-pysha3; pycryptodome (web3's keccak) is the independent reference."""
    engine = _engine()
    rng = random.Random(11)
    messages = [rng.randbytes(n) for n in range(0, 300, 7)] + [rng.randbytes(64) for _ in range(50)]
    assert engine.keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert [engine.keccak(m) for m in messages] == [_reference_keccak(m) for m in messages]
    assert engine.leaf_hashes(messages) == [_reference_keccak(_reference_keccak(m)) for m in messages]
    nodes = [_reference_keccak(m) for m in messages[:92]]  # pairs of children
    pairs = zip(nodes[::2], nodes[1::2], strict=True)
    assert engine.parents(nodes) == [_reference_keccak(min(a, b) + max(a, b)) for a, b in pairs]
    expected = nodes[0]
    for sibling in nodes[1:]:
        expected = _reference_keccak(min(expected, sibling) + max(expected, sibling))
    assert engine.process_proof(nodes[0], nodes[1:]) == expected


def _reference_keccak(data: bytes) -> bytes:
    return keccak.new(data=data, digest_bits=256).digest()


def test_concurrent_builds_in_threads() -> None:
    values = loans(random.Random(9), 3000)
    expected = StandardMerkleTree.of(values, LOAN).root
    roots: list[bytes] = []

    def build() -> None:
        roots.append(StandardMerkleTree.of(values, LOAN).root)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert roots == [expected] * 4
