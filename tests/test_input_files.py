"""read_json_file: every way a hand-made JSON file can be wrong is one InvalidInput line, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import node.chain.client  # noqa: F401 - the chain stack loaded, as in every command that reads these files
from node.errors import InvalidInput
from node.input_files import read_json_file


def test_read_json_file_returns_the_document(tmp_path: Path) -> None:
    path = tmp_path / "founders.json"
    path.write_text('[{"name": "Bank A"}]', encoding="utf-8")
    assert read_json_file(path, "founders file") == [{"name": "Bank A"}]


def test_read_json_file_skips_a_byte_order_mark(tmp_path: Path) -> None:
    """Was refused as 'not JSON: Unexpected UTF-8 BOM', where every CSV reader of the node skips it."""
    path = tmp_path / "application.json"
    path.write_bytes(b"\xef\xbb\xbf" + '{"name": "Bank Ä"}\r\n'.encode())
    assert read_json_file(path, "application file") == {"name": "Bank Ä"}


@pytest.mark.parametrize(("content", "code", "message"), [
    (None, "file_not_found", "does not exist"),
    (b"\xff\xfe[]", "malformed_file", "is not UTF-8 text"),
    (b"{not json", "malformed_file", "is not JSON: Expecting property name"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed_file", "nests too deeply"),
    # More digits than Python converts to an int: was a ValueError traceback out of `alliance audit verify`.
    (b'{"pool_id": 1' + b"0" * 5_000 + b"}", "malformed_file", "Exceeds the limit (4300 digits)"),
])
def test_read_json_file_refuses_with_a_reason(tmp_path: Path, content: bytes | None, code: str, message: str) -> None:
    path = tmp_path / "bundle.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidInput) as refused:
        read_json_file(path, "provenance bundle")
    assert refused.value.code == code
    assert str(refused.value).startswith(f"provenance bundle {path} ") and message in str(refused.value)


def test_read_json_file_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a directory"):
        read_json_file(tmp_path, "founders file")


def test_the_chain_stack_leaves_the_interpreters_recursion_limit_alone() -> None:
    # py-ecc raises it to 100,000 on import; node.chain puts it back (see node/chain/__init__.py).
    assert sys.getrecursionlimit() <= 10_000
