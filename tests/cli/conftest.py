"""Run the `alliance` CLI in-process, as a user would, against the session's anvil."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from alliance_cli.main import run


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """`alliance ARGS` in this process, with what it printed and its exit code."""
    capsys.readouterr()
    try:
        run(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rpc_url: str,
        data_dir: Path) -> CliRunner:
    """`cli("member", "list", "--json")` runs the command on a data dir wired to the test chain."""
    monkeypatch.setenv("ALLIANCE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ALLIANCE_RPC_URL", rpc_url)
    monkeypatch.delenv("ALLIANCE_KEY_PASSPHRASE", raising=False)

    def invoke(*args: str, env: dict[str, str] | None = None) -> CliResult:
        with monkeypatch.context() as scoped:
            for key, value in (env or {}).items():
                scoped.setenv(key, value)
            return run_cli(capsys, *args)

    return invoke
