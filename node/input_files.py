"""Reading files that a person hands the node: founders lists, provenance bundles, applications, report imports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from node.errors import InvalidInput


@contextmanager
def reading_text(path: Path, what: str, *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[TextIO]:
    """`path` opened as text. A file that is missing, a directory, unreadable or not UTF-8 (found while reading it
    inside the block, too) is an InvalidInput (`file_not_found` or `malformed_file`) naming it as `what`."""
    with _refused_unless_readable(path, what), path.open(encoding=encoding, newline=newline) as handle:
        yield handle


@contextmanager
def reading_bytes(path: Path, what: str) -> Iterator[BinaryIO]:
    """`path` opened as bytes; a file that cannot be read is refused as `reading_text` refuses it."""
    with _refused_unless_readable(path, what), path.open("rb") as handle:
        yield handle


@contextmanager
def _refused_unless_readable(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} does not exist", code="file_not_found") from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} {path} is a directory", code="malformed_file") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {path} is not UTF-8 text", code="malformed_file") from None
    except OSError as exc:
        raise InvalidInput(f"{what} {path} cannot be read: {exc.strerror or exc}", code="malformed_file") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key[:40]!r} appears twice in one object")
        seen[key] = value
    return seen


def read_json_file(path: Path, what: str, *, max_chars: int | None = None, unique_keys: bool = False) -> Any:
    """The JSON document in `path`, or InvalidInput saying in one line what is wrong with the file.

    A hostile file may nest its arrays thousands deep: that is refused like any other malformed file, not left to
    escape as a RecursionError and a traceback. With `max_chars`, a longer file is refused after reading that much
    (a device such as /dev/zero, or a huge file passed by mistake, was read whole into memory). With `unique_keys`,
    an object naming a key twice is refused: json.loads keeps the last value, another reader of the same file may
    keep the first, so what was checked and what a person reads could differ.
    """
    # utf-8-sig: a byte order mark, as Windows editors write, is skipped (RFC 8259 lets a parser ignore it), as
    # the CSV readers do; json.loads refused such a file as not JSON.
    with reading_text(path, what, encoding="utf-8-sig") as handle:
        text = handle.read() if max_chars is None else handle.read(max_chars + 1)
    if max_chars is not None and len(text) > max_chars:
        raise InvalidInput(f"{what} {path} is larger than {max_chars:,} characters", code="malformed_file")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys if unique_keys else None)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} {path} is not JSON: {exc}", code="malformed_file") from None
    except ValueError as exc:
        # Python refuses to convert an integer literal of more than 4,300 digits (CVE-2020-10735) with a plain
        # ValueError, not a JSONDecodeError: a hostile file's huge number is one more malformed file.
        raise InvalidInput(f"{what} {path} is not JSON this node reads: {exc}".split(";")[0],
                           code="malformed_file") from None
    except RecursionError:
        raise InvalidInput(f"{what} {path} is not JSON this node reads: it nests too deeply",
                           code="malformed_file") from None
