"""bench/loan_list.py on a small version: its own check (the file holds every id of the version) must hold, and its
last line is the JSON of its figures."""

from __future__ import annotations

import json

import pytest

from bench.loan_list import main


def test_loan_list_benchmark_runs_and_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--loans", "300"]) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert figures["loans"] == 300
    assert figures["cli_rss_small_mb"] > 0 and figures["cli_rss_large_mb"] > 0 and figures["streamed_s"] > 0
