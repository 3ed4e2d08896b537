"""Reading the credit policy file: overrides merged key by key, values the modules cannot use refused at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.config import load_settings
from node.errors import InvalidInput
from node.modules.policy import load_policy, policy_for
from node.runtime import NodeContext


def test_load_policy_overrides_one_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[decision]\napprove_min_score = 640\n[scorecard.signals]\nvelocity_ip = -90\n"
                    "employer_watchlisted = -100\n[scorecard.inputs]\nbureau_score = [[0, 600, -50]]\n")
    policy = load_policy(path)
    assert policy.decision["approve_min_score"] == 640 and policy.decision["review_min_score"] == 520
    assert policy.scorecard["signals"]["velocity_ip"] == -90 and policy.scorecard["signals"]["alliance_hit"] == -400
    # A plugin's signal codes and the bank's own inputs are the bank's to name.
    assert policy.scorecard["signals"]["employer_watchlisted"] == -100
    assert policy.scorecard["inputs"]["bureau_score"] == [[0, 600, -50]]


# Each was read without a word and failed in the module using it at every application: all went to review
# (extension_failed:<module>), or, for a string in place of a list, matched substrings.
@pytest.mark.parametrize(("toml", "named"), [
    ('[decision]\napprove_min_score = "high"\n', "decision.approve_min_score"),
    ('[decision]\ndecline_on = "alliance_hit"\n', "decision.decline_on"),
    ("[scorecard]\nsignals = 5\n", "scorecard.signals"),
    ('[scorecard.inputs]\ndebt_to_income = [[0, "half", 40]]\n', "scorecard.inputs.debt_to_income"),
    ("[velocity]\nwindow_hours = [168]\n", "velocity.window_hours"),
    ('[decision]\nbands = [{min_score = 700, max_limit = "lots", annual_rate_percent = "4"}]\n', "decision.bands[0]"),
    ('[decision]\nbands = [{min_score = 700, max_limit = "1e15", annual_rate_percent = "4"}]\n', "decision.bands"),
    ("decision = 5\n", "decision must be a table"),
    # Read without a word: that velocity check was off, no loan was ever eligible, every pool's tape was refused.
    ('[velocity]\nkinds = ["phone", "device"]\n', "velocity.kinds: unknown 'device'"),
    ('[abs]\neligible_statuses = ["curent"]\n', "abs.eligible_statuses: unknown 'curent'"),
    ('[abs]\namortisation_type = "french"\n', "abs.amortisation_type"),
    ('[abs]\npurpose = 3\n', "abs.purpose"),
    ('[abs]\ncurrency = "KRW"\n', "abs.currency = 'KRW' cannot be used"),
    ('[abs]\ncurrency = 1\n', "abs.currency = 1 cannot be used"),
    # Misspelt keys were merged and never read: the default stayed in force, the bank believing its value was.
    ("[decision]\naprove_min_score = 700\n", "unknown keys decision.aprove_min_score"),
    ("[abs]\nmax_borower_share = 0.1\n", "unknown keys abs.max_borower_share"),
    # Converted without a word; then every velocity check failed (all applications to review), or no limit held.
    ("[velocity]\nwindow_hours = inf\n", "velocity.window_hours"),
    ("[velocity]\nwindow_hours = nan\n", "velocity.window_hours"),
    ("[velocity]\nwindow_hours = -5\n", "velocity.window_hours"),
    ("[abs]\nmax_borrower_share = nan\n", "abs.max_borrower_share"),
    ("[abs]\nmax_region_share = 1.5\n", "abs.max_region_share"),
    ('[scorecard.inputs]\ndebt_to_income = [[0, "nan", 40]]\n', "scorecard.inputs.debt_to_income"),
    # Ranges no value falls in: every applicant underage or out of range (declined), a band's points never given.
    ("[identity]\nmin_age = 71\n", "identity.min_age = 71 is above identity.max_age = 70"),
    ("[identity]\nmin_age = 30\nmax_age = 25\n", "identity.min_age = 30 is above identity.max_age = 25"),
    ("[scorecard.inputs]\nbureau_score = [[0, 600, -50], [700, 650, 20]]\n",
     "scorecard.inputs.bureau_score: band [700, 650) holds no value"),
    ("[scorecard.inputs]\ndebt_to_income = [[0.3, 0.3, 40]]\n", "scorecard.inputs.debt_to_income: band [0.3, 0.3)"),
    ('[scorecard.inputs]\nmonthly_income = [["inf", "inf", 40]]\n', "scorecard.inputs.monthly_income: band [inf, inf)"),
], ids=["text_for_int", "text_for_list", "int_for_table", "text_in_input_band", "list_for_number",
        "text_for_limit", "limit_over_bound", "int_for_decision_table", "unknown_velocity_kind",
        "unknown_loan_status", "unknown_amortisation", "int_for_purpose", "unsupported_currency", "int_for_currency",
        "misspelt_decision_key", "misspelt_abs_key", "infinite_window", "nan_window", "negative_window",
        "nan_borrower_share", "region_share_over_one", "nan_input_band", "min_age_over_default_max_age",
        "min_age_over_max_age", "input_band_upside_down", "input_band_empty", "input_band_from_infinity"])
def test_load_policy_refuses_a_value_the_modules_cannot_use(tmp_path: Path, toml: str, named: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    with pytest.raises(InvalidInput, match=re.escape(named)) as refused:
        load_policy(path)
    assert refused.value.code == "invalid_credit_policy"


def test_load_policy_takes_one_age_and_bands_that_touch(tmp_path: Path) -> None:
    """The bounds refused above are strict: min_age equal to max_age admits that one age, and a band may start
    where the one before ends ([lower, upper) bands do not overlap)."""
    path = tmp_path / "policy.toml"
    path.write_text("[identity]\nmin_age = 30\nmax_age = 30\n"
                    '[scorecard.inputs]\nbureau_score = [[0, 600, -50], [600, 700, 0], [700, "inf", 20]]\n')
    policy = load_policy(path)
    assert policy.identity["min_age"] == policy.identity["max_age"] == 30
    assert len(policy.scorecard["inputs"]["bureau_score"]) == 3


def test_a_relative_policy_file_is_read_from_the_data_dir_wherever_the_node_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was read relative to the working directory: `node start` from elsewhere found no file, or another one."""
    data_dir, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_dir.mkdir()
    (data_dir / "policy.toml").write_text("[decision]\napprove_min_score = 640\n")
    (elsewhere / "policy.toml").write_text("[decision]\napprove_min_score = 700\n")
    monkeypatch.chdir(elsewhere)
    node = NodeContext(load_settings(data_dir, credit_policy_file="policy.toml"))
    try:
        assert policy_for(node).decision["approve_min_score"] == 640
    finally:
        node.close()
