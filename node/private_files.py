"""Files the node writes whole or not at all, and durably: its keys (signing keystore, X25519 key), those only its
own user may read (its config with the database password, demo API keys, prospect lists, the CLI's provenance bundles
and import error lists), and those another service reads (Besu's accounts allowlist).

Durably: the content is fsynced before the rename and the directory after it. Without that, ext4 and XFS may keep
the new name but not the data through a power cut, and a key file made moments before (a membership's signing key,
registered on chain right after `alliance init`) came back empty.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_private_text(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8), readable and writable by its owner only, whole or not at all.

    Created 0600 (mkstemp) rather than with the umask's mode (0644: every account on the host could read it), so a
    file already there under a looser mode is replaced by one that never was. Written beside it and renamed over
    it: a write cut short (a full disk, a crash) leaves neither half a file nor half of the earlier one (a config
    the node could no longer read).
    """
    write_private_bytes(path, text.encode("utf-8"))


def write_public_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all, readable by all (0644: Besu may run as another user)."""
    _write_whole(path, (text.encode("utf-8"),), mode=0o644, exclusive=False)


def write_private_bytes(path: Path, content: bytes, *, exclusive: bool = False) -> None:
    """Write `content` to `path`, owner-only, whole or not at all (see write_private_text).

    `exclusive`: FileExistsError if `path` exists, which is left as it was: a key file is never overwritten.
    """
    _write_whole(path, (content,), mode=0o600, exclusive=exclusive)


def write_private_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    """Write `chunks` one after the other to `path`, owner-only, whole or not at all (see write_private_text): a file
    too large to hold in memory (a million-loan version's ids), written as it is produced."""
    _write_whole(path, chunks, mode=0o600, exclusive=False)


def write_private_files(files: Iterable[tuple[Path, str]]) -> None:
    """Write several files (UTF-8), each owner-only and whole (see write_private_text), and put any in place only once
    every one is written: a write that fails (a full disk at the 300th of 500 audit bundles) leaves every path as it
    was, a file an earlier run wrote there included. Written one at a time and closed, so many files need no more
    than one open descriptor."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            with _staged_file(path, mode=0o600) as (partial, handle):
                staged.append((partial, path))
                handle.write(text.encode("utf-8"))
        for partial, path in staged:
            os.replace(partial, path)
        for directory in {path.parent for _, path in staged}:
            sync_directory(directory)
    finally:
        for partial, _ in staged:
            Path(partial).unlink(missing_ok=True)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` over `target` (one directory) and make the rename survive a power cut."""
    os.replace(source, target)
    sync_directory(target.parent)


def sync_directory(directory: Path) -> None:
    """Make the renames and links made in `directory` durable (a power cut must not bring back the old names)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing_private_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path` through, owner-only, put in place whole when the block ends without an error (see
    write_private_text), or not at all. Made on entry: a caller that does its work inside the block learns that
    `path` cannot be written (its directory missing, a directory in its place) before any of that work is done."""
    if path.is_dir():  # else found only by the rename at the end, after that work
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    with _whole_file(path, mode=0o600, exclusive=False) as handle:
        yield handle


def _write_whole(path: Path, chunks: Iterable[bytes], *, mode: int, exclusive: bool) -> None:
    with _whole_file(path, mode=mode, exclusive=exclusive) as handle:
        for chunk in chunks:
            handle.write(chunk)


@contextmanager
def _staged_file(path: Path, *, mode: int) -> Iterator[tuple[str, BinaryIO]]:
    """A new file beside `path` (its name, and a handle to write it through), fsynced and closed when the block ends.
    The caller puts it in place and removes it whatever happens; it is removed here only if the block fails."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # mkstemp made it 0600
            yield partial, handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


@contextmanager
def _whole_file(path: Path, *, mode: int, exclusive: bool) -> Iterator[BinaryIO]:
    with _staged_file(path, mode=mode) as (partial, handle):
        yield handle
    try:
        if exclusive:
            os.link(partial, path)  # atomic, and refuses a path that exists (os.replace would overwrite it)
        else:
            os.replace(partial, path)
        sync_directory(path.parent)
    finally:
        Path(partial).unlink(missing_ok=True)
