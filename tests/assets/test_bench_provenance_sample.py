"""bench/provenance_sample.py on a small pool: its own checks (each bundle of the sample equal to the loan's bundle
built alone, every period covered) must hold, and its last line is the JSON of its figures."""

from __future__ import annotations

import json

import pytest

from bench.provenance_sample import main


def test_provenance_sample_benchmark_runs_and_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--loans", "300", "--periods", "2", "--sample", "20", "--alone", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (figures["loans"], figures["periods"], figures["sample"], figures["alone"]) == (300, 2, 20, 2)
    assert figures["alone_s_per_loan"] > 0 and figures["sample_s_per_loan"] > 0
