"""`alliance apply`, `alliance marketing prescreen`, `alliance alerts`, `alliance extensions list` on bank A."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.modules.credit_platform import applications_page
from node.modules.risk_operations import DEFAULT_ALERTS_PAGE
from node.runtime import NodeContext
from tests.cli.conftest import run_cli
from tests.conftest import TEST_PASSPHRASE
from tests.modules.test_application_api import add_alerts
from tests.modules.test_marketing import PROSPECTS, SHIFTED_PROSPECTS, identifiers_in
from tests.modules.workflow import application, report_and_mirror, resident_id


@pytest.fixture
def bank_a_env(keyed_banks: list[NodeContext], monkeypatch: pytest.MonkeyPatch) -> NodeContext:
    a = keyed_banks[0]
    monkeypatch.setenv("ALLIANCE_DATA_DIR", str(a.settings.data_dir))
    monkeypatch.setenv("ALLIANCE_DEPLOYMENT_FILE", str(a.settings.effective_deployment_file))
    monkeypatch.setenv("ALLIANCE_KEY_PASSPHRASE", TEST_PASSPHRASE)
    return a


def test_cli_apply_marketing_alerts_extensions(bank_a_env: NodeContext, keyed_banks: list[NodeContext],
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = keyed_banks
    report_and_mirror(b, a, [("cn_resident_id", resident_id(2))])
    clean, listed = tmp_path / "clean.json", tmp_path / "listed.json"
    clean.write_text(application(1).model_dump_json())
    listed.write_text(application(2).model_dump_json())

    code, out, _ = run_cli(capsys, "apply", str(clean), "--json")
    assert code == 0 and json.loads(out)["outcome"] == "approve"
    code, out, _ = run_cli(capsys, "apply", str(listed))
    assert code == 0 and "decline" in out and "alliance_hit" in out
    broken = tmp_path / "broken.json"
    broken.write_text('{"channel": "x"}')
    code, _, err = run_cli(capsys, "apply", str(broken))
    assert code == 1 and "applicant" in err and "Traceback" not in err
    assert err.rstrip().endswith(" [invalid_request]")
    broken.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(capsys, "apply", str(broken))
    assert code == 1 and "nests too deeply" in err and "Traceback" not in err

    prospects = tmp_path / "prospects.csv"
    prospects.write_text(PROSPECTS)
    code, out, _ = run_cli(capsys, "marketing", "prescreen", str(prospects), "--json")
    assert code == 0 and json.loads(out)["totals"]["blacklisted"] == 1
    assert (tmp_path / "prospects.clean.csv").read_text().count("\n") == 3
    # The clean list holds raw identifiers: owner only, even over a file left readable by an earlier run.
    assert (tmp_path / "prospects.clean.csv").stat().st_mode & 0o777 == 0o600
    (tmp_path / "prospects.clean.csv").chmod(0o644)
    code, out, _ = run_cli(capsys, "marketing", "prescreen", str(prospects), "--json")
    assert code == 0 and (tmp_path / "prospects.clean.csv").stat().st_mode & 0o777 == 0o600

    code, out, _ = run_cli(capsys, "alerts", "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = run_cli(capsys, "alerts", "confirm", "99")
    assert code == 1 and "no alert 99" in err

    code, out, _ = run_cli(capsys, "extensions", "list", "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)][:2] == ["credit_platform", "marketing"]


def test_cli_marketing_prints_no_identifier_held_in_the_segment_column(bank_a_env: NodeContext, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The terminal (and a job's log of it) shows segment names: rows whose segment cell holds a customer's
    identifier are counted under `all`, in the table and in --json."""
    prospects = tmp_path / "prospects.csv"
    prospects.write_text(SHIFTED_PROSPECTS)
    table, listed = run_cli(capsys, "marketing", "prescreen", str(prospects)), \
        run_cli(capsys, "marketing", "prescreen", str(prospects), "--json")
    assert table.code == listed.code == 0 and "young" in table.out
    assert identifiers_in(table.out + table.err + listed.out + listed.err) == []
    assert json.loads(listed.out)["invalid_reasons"] == {"segment:holds_identifier": 7}


@pytest.mark.parametrize(("args", "message"), [
    (("marketing", "prescreen", "{tmp}/prospects.csv", "--output", "{tmp}"), "cannot write"),
    (("marketing", "prescreen", "{tmp}/prospects.csv", "--output", "{tmp}/no-such-dir/clean.csv"), "cannot write"),
    (("alerts", "--state", "bogus"), "state"),
    (("alerts", "confirm", str(2**31)), "alert_id"),
    (("alerts", "dismiss", str(2**63)), "alert_id"),
])
def test_cli_workflow_commands_refuse_bad_input_in_one_line(bank_a_env: NodeContext, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            args: tuple[str, ...], message: str) -> None:
    (tmp_path / "prospects.csv").write_text(PROSPECTS)
    code, _, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and message in lines[0], err


@pytest.mark.parametrize("output", ["{tmp}/clean", "{tmp}/no-such-dir/clean.csv"], ids=["directory", "no_directory"])
def test_cli_marketing_that_cannot_write_its_clean_list_checks_and_logs_nothing(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str) -> None:
    """The list was screened, and its checks written to the query log, before the clean list was found to have
    nowhere to go: the log said the bank checked prospects for a list nobody got (once more on every retry)."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "prospects.csv").write_text(PROSPECTS)
    (lists / "clean").mkdir()
    logged = json.loads(run_cli(capsys, "check-log", "--json").out)["entries"]
    code, out, err = run_cli(capsys, "marketing", "prescreen", str(lists / "prospects.csv"), "--output",
                             output.replace("{tmp}", str(lists)))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "cannot write" in lines[0] and out == "", err
    assert json.loads(run_cli(capsys, "check-log", "--json").out)["entries"] == logged
    assert sorted(p.name for p in lists.iterdir()) == ["clean", "prospects.csv"]
    assert list((lists / "clean").iterdir()) == []


def test_cli_apply_refuses_an_oversized_file_in_one_line_and_stores_nothing(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file far longer than any application (an export passed by mistake, a device) was read whole into memory,
    its unknown keys ignored, and decided."""
    padded = tmp_path / "padded.json"
    padded.write_text(json.dumps({**json.loads(application(5).model_dump_json()), "export": "x" * 2_000_000}))
    with bank_a_env.store.session() as session:
        before = len(applications_page(session, limit=1_000).applications)
    code, out, err = run_cli(capsys, "apply", str(padded))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "larger than" in lines[0] and lines[0].endswith("[malformed_file]")
    assert out == ""
    with bank_a_env.store.session() as session:
        assert len(applications_page(session, limit=1_000).applications) == before


@pytest.mark.parametrize("output", ["prospects.csv", "./prospects.csv"])
def test_cli_marketing_refuses_to_write_the_clean_list_over_the_prospect_list(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str) -> None:
    """`--output` naming the input replaced it with the clean list: the invalid, duplicate and blacklisted rows were
    gone, with nothing left saying which they were."""
    prospects = tmp_path / "prospects.csv"
    prospects.write_text(PROSPECTS)
    code, out, err = run_cli(capsys, "marketing", "prescreen", str(prospects), "--output",
                             str(tmp_path / output))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].endswith("[output_is_input]") and out == ""
    assert prospects.read_text() == PROSPECTS


def test_cli_apply_with_a_credit_policy_the_modules_cannot_use_fails_with_one_line(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    clean = tmp_path / "clean.json"
    clean.write_text(application(3).model_dump_json())
    policy = tmp_path / "policy.toml"
    policy.write_text('[decision]\napprove_min_score = "high"\n')  # every module failed: every application review
    monkeypatch.setenv("ALLIANCE_CREDIT_POLICY_FILE", str(policy))
    code, out, err = run_cli(capsys, "apply", str(clean))
    assert code == 1 and "decision.approve_min_score" in err and "Traceback" not in err
    assert "review" not in out


def test_cli_apply_refuses_a_misspelt_extension_name_in_one_line_and_stores_nothing(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`node start` refused it; `alliance apply` decided with the built-in the bank meant to leave out."""
    clean = tmp_path / "clean.json"
    clean.write_text(application(6).model_dump_json())
    monkeypatch.setenv("ALLIANCE_EXTENSIONS_DISABLED", '["credit_decison"]')
    with bank_a_env.store.session() as session:
        before = len(applications_page(session, limit=1_000).applications)
    code, out, err = run_cli(capsys, "apply", str(clean))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "'credit_decison'" in lines[0] and out == ""
    with bank_a_env.store.session() as session:
        assert len(applications_page(session, limit=1_000).applications) == before


def test_cli_alerts_lists_every_alert(bank_a_env: NodeContext, capsys: pytest.CaptureFixture[str]) -> None:
    """`alliance alerts` showed the newest 100 and no way to older ones; it lists all, like `alliance assets pools`."""
    ids = add_alerts(bank_a_env, DEFAULT_ALERTS_PAGE + 1)
    code, out, _ = run_cli(capsys, "alerts", "--json")
    assert code == 0 and [x["alert_id"] for x in json.loads(out)] == ids[::-1]
    code, out, _ = run_cli(capsys, "alerts", "--state", "dismissed", "--json")
    assert code == 0 and [x["alert_id"] for x in json.loads(out)] == ids[1::2][::-1]  # odd ones are dismissed
    code, out, err = run_cli(capsys, "alerts", "dismiss", str(ids[0]), "--json")  # as `alerts confirm` takes it
    assert code == 0, err
    assert (json.loads(out)["alert_id"], json.loads(out)["state"]) == (ids[0], "dismissed")


@pytest.mark.parametrize(("module", "command"), [
    ("credit_platform", ["apply", "{application}"]),
    ("marketing", ["marketing", "prescreen", "{prospects}", "--output", "{tmp}/clean.csv"]),
    ("risk_operations", ["alerts"]),
    ("risk_operations", ["alerts", "dismiss", "1"]),
])
def test_cli_command_of_an_extension_the_settings_leave_out_is_refused_and_changes_nothing(
        bank_a_env: NodeContext, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        module: str, command: list[str]) -> None:
    """The API does not mount a left-out module's routes; its CLI commands ran anyway: a bank that switched off the
    built-in marketing module (replaced by its own) still screened lists and filled the query log from the CLI."""
    ids = add_alerts(bank_a_env, 1)
    (tmp_path / "application.json").write_text(application(7).model_dump_json())
    (tmp_path / "prospects.csv").write_text(PROSPECTS)
    args = [a.format(application=tmp_path / "application.json", prospects=tmp_path / "prospects.csv", tmp=tmp_path)
            for a in command]
    args = [str(ids[0]) if a == "1" else a for a in args]
    logged = json.loads(run_cli(capsys, "check-log", "--json").out)["entries"]
    alerts = run_cli(capsys, "alerts", "--json").out
    with bank_a_env.store.session() as session:
        decided = len(applications_page(session, limit=1_000).applications)
    monkeypatch.setenv("ALLIANCE_EXTENSIONS_DISABLED", json.dumps([module]))
    code, out, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and out == "", err
    assert f"the {module} extension does not run on this node (extensions_disabled names it)" in lines[0]
    assert lines[0].endswith("[extension_not_running]")
    assert "--help" not in lines[0] and run_cli(capsys, *command[:2], "--help").code == 0  # the help still shows
    monkeypatch.delenv("ALLIANCE_EXTENSIONS_DISABLED")
    assert not (tmp_path / "clean.csv").exists()
    assert json.loads(run_cli(capsys, "check-log", "--json").out)["entries"] == logged
    assert run_cli(capsys, "alerts", "--json").out == alerts
    with bank_a_env.store.session() as session:
        assert len(applications_page(session, limit=1_000).applications) == decided


def test_cli_apply_does_not_print_a_key_that_may_be_an_identifier(bank_a_env: NodeContext, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal names where the file is wrong: a phone number typed as a key was printed with it."""
    body = json.loads(application(8).model_dump_json())
    body["applicant"]["13800138000"] = "x"
    (tmp_path / "application.json").write_text(json.dumps(body))
    code, out, err = run_cli(capsys, "apply", str(tmp_path / "application.json"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and out == "", err
    assert "applicant.{key}: Extra inputs are not permitted" in lines[0] and "13800138000" not in err
