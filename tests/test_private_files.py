"""write_private_text: owner-only files, written whole or not at all."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from node.private_files import write_private_text


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
