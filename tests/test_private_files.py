"""node.private_files: owner-only files and keys, written whole or not at all, and durably."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.chain.signer import Signer, write_keystore
from node.private_files import (
    replace_durably,
    write_private_bytes,
    write_private_files,
    write_private_text,
    write_public_text,
    writing_private_file,
)


def test_write_private_text_narrows_a_looser_file_to_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "alliance.toml"
    path.write_text("old")
    path.chmod(0o644)
    write_private_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600


def test_write_private_text_cut_short_keeps_the_earlier_file(tmp_path: Path) -> None:
    """The file was truncated and written in place: a write cut short (here by a file size limit, as by a full
    disk) left half of the new text where the whole earlier file had been."""
    path = tmp_path / "prospects.clean.csv"
    path.write_text("phone\n+8613800138000\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: the write fails with EFBIG
    try:
        with pytest.raises(OSError):
            write_private_text(path, "phone\n" + "+8613800138000\n" * 1000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_text() == "phone\n+8613800138000\n"
    assert [p.name for p in tmp_path.iterdir()] == ["prospects.clean.csv"]


def test_writing_private_file_refuses_a_path_it_cannot_write_before_its_block_runs(tmp_path: Path) -> None:
    (tmp_path / "clean.csv").mkdir()
    ran = []
    for target in (tmp_path / "clean.csv", tmp_path / "no-such-dir" / "clean.csv"):
        with pytest.raises(OSError), writing_private_file(target):
            ran.append(target)
    assert ran == [] and [p.name for p in tmp_path.iterdir()] == ["clean.csv"]


def test_writing_private_file_whose_block_fails_keeps_the_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "prospects.clean.csv"
    path.write_text("old")
    with pytest.raises(ValueError), writing_private_file(path) as handle:
        handle.write(b"half")
        raise ValueError("the work failed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["prospects.clean.csv"]
    with writing_private_file(path) as handle:
        handle.write(b"new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600


class FsyncSpy:
    """What os.fsync was called on, by path, in order (the real fsync still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            self.synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def _write_keystore(path: Path) -> None:
    write_keystore(path, Signer.generate(), "a passphrase of the test")


def _replace_durably(path: Path) -> None:
    source = path.with_name("next")
    source.write_text("next")
    replace_durably(source, path)


def test_write_private_files_puts_none_in_place_until_all_are_written(tmp_path: Path) -> None:
    earlier = tmp_path / "a.json"
    earlier.write_text("earlier")

    def files_then_a_full_disk() -> Iterator[tuple[Path, str]]:
        yield earlier, "new a"
        yield tmp_path / "b.json", "new b"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_private_files(files_then_a_full_disk())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and earlier.read_text() == "earlier"

    write_private_files([(earlier, "new a"), (tmp_path / "b.json", "new b")])
    assert {p.name: (p.read_text(), p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        "a.json": ("new a", 0o600), "b.json": ("new b", 0o600)}


@pytest.mark.parametrize("write", [
    lambda path: write_private_text(path, "text"),
    lambda path: write_public_text(path, "text"),
    lambda path: write_private_bytes(path, b"key", exclusive=True),
    _write_keystore,
], ids=["private_text", "public_text", "private_bytes_exclusive", "keystore"])
def test_a_written_file_is_synced_before_its_rename_and_the_directory_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Callable[[Path], None]) -> None:
    """Without the fsyncs a power cut could keep the new name but not the data: a key file made by `alliance init`,
    whose address went on chain a moment later, came back empty."""
    spy = FsyncSpy(monkeypatch)
    write(tmp_path / "signing-key.json")
    assert len(spy.synced) == 2
    written, directory = spy.synced
    assert Path(written).parent == tmp_path and Path(written).name.startswith(".signing-key.json.")
    assert written.endswith(".partial")  # the content, before it took the name
    assert directory == str(tmp_path)  # the name, after


def test_replace_durably_syncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch)
    _replace_durably(tmp_path / "encryption-key.pem")
    assert spy.synced == [str(tmp_path)] and (tmp_path / "encryption-key.pem").read_text() == "next"


def test_an_exclusive_write_never_replaces_a_file_that_is_there(tmp_path: Path) -> None:
    path = tmp_path / "encryption-key.pem"
    path.write_bytes(b"the bank's key")
    with pytest.raises(FileExistsError):
        write_private_bytes(path, b"another key", exclusive=True)
    assert path.read_bytes() == b"the bank's key"
    assert [p.name for p in tmp_path.iterdir()] == ["encryption-key.pem"]


def test_an_exclusive_write_cut_short_leaves_no_file(tmp_path: Path) -> None:
    """The key file was created under its own name first and written in place: a write cut short left a key file
    that made the data dir look initialised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError):
            write_private_bytes(tmp_path / "encryption-key.pem", b"k" * 10_000, exclusive=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []
