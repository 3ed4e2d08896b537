"""The example plugin package (tests/plugin_example), installed through its entry point, changes decisions
without any change to the node's code or configuration.

Installing means what pip does, minus the copying: a `.dist-info` directory with the package's metadata and
its `entry_points.txt` (read from the package's own pyproject.toml) on sys.path, so the node discovers it
through importlib.metadata exactly as an installed wheel. Works on a fresh clone; removed after the test.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from alliance_cli.commands.extensions import add_extension_commands
from alliance_cli.state import CliState, remember_options
from node.config import ConfigError, load_settings
from node.extensions import hookimpl
from node.extensions.manager import ExtensionManager, check_extension_names, extensions_for, use_extensions
from node.modules.credit_platform import submit_application
from node.runtime import NodeContext
from tests.modules.workflow import application

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugin_example"


@pytest.fixture
def example_plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site-packages"
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                        f"Version: {project['version']}\n")
    points = project["entry-points"]["alliance.extensions"]
    (dist_info / "entry_points.txt").write_text(
        "[alliance.extensions]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    yield project["name"]
    sys.modules.pop("alliance_example_plugin", None)


def test_installed_plugin_changes_decision(keyed_banks: list[NodeContext], example_plugin_installed: str) -> None:
    a = keyed_banks[0]
    before = NodeContext(a.settings)  # as the node ran before the package was installed
    use_extensions(before, ExtensionManager(disabled=["example_policy"]))
    crypto = application(1, scenario="crypto_purchase")
    watchlisted = application(2, bank_inputs={"monthly_income": 15000, "employer_watchlisted": 1})
    assert submit_application(before, crypto, submitted_by="test")["outcome"] == "approve"

    after = NodeContext(a.settings)  # default settings: every installed plugin, no configuration
    info = {i.name: i for i in extensions_for(after).extensions()}
    assert info["example_policy"].loaded and info["example_policy"].source == f"entry point {example_plugin_installed}"
    declined = submit_application(after, application(3, scenario="crypto_purchase"), submitted_by="test")
    assert declined["outcome"] == "decline" and declined["reasons"] == ["scenario_excluded_by_bank_policy"]
    assert declined["trail"]["decision"]["module"] == "example_policy"
    reviewed = submit_application(after, watchlisted, submitted_by="test")
    assert reviewed["outcome"] == "review" and reviewed["reasons"] == ["employer_watchlisted"]
    assert any(r["code"] == "employer_watchlisted" for r in reviewed["trail"]["score"]["reasons"])
    normal = submit_application(after, application(4), submitted_by="test")
    assert normal["outcome"] == "approve" and normal["trail"]["decision"]["module"] == "credit_decision"
    for node in (before, after):
        node.close()


def test_installed_plugin_contributes_cli_command(example_plugin_installed: str, tmp_path: Path) -> None:
    remember_options(CliState(data_dir=tmp_path / "node"))  # as `alliance --data-dir` would: not an earlier test's
    cli = typer.Typer()

    @cli.command("noop")
    def noop() -> None:
        """A command so Typer keeps subcommands."""

    assert add_extension_commands(cli) == ["example-policy"]
    result = CliRunner().invoke(cli, ["example-policy"])
    assert result.exit_code == 0 and "crypto_purchase" in result.output


class BankCommands:
    """A plugin contributing a command function and a Typer app whose own callback takes an option."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.group = typer.Typer(no_args_is_help=True)
        self.group.callback()(self._group_options)
        self.group.command("run")(lambda: self.ran.append("group run"))

    def _group_options(self, region: str = "all") -> None:
        """The bank's report commands."""
        self.ran.append(f"group callback {region}")

    @hookimpl
    def alliance_cli_commands(self) -> list[tuple[str, Any]]:
        return [("bank-report", lambda: self.ran.append("function")), ("bank-group", self.group)]


@pytest.mark.parametrize(("setting", "value", "why"), [
    (None, None, None),
    ("ALLIANCE_EXTENSIONS_DISABLED", '["bank_cli"]', "extensions_disabled names it"),
    ("ALLIANCE_EXTENSIONS_ENABLED", '["credit_platform"]', "extensions_enabled does not name it"),
    ("ALLIANCE_EXTENSIONS_ENABLED", '["credit_platform", "bank_cli"]', None),
])
def test_a_plugin_command_runs_only_when_the_node_settings_run_the_plugin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, value: str | None,
        why: str | None) -> None:
    """Commands are added when the CLI starts, before a data dir is known: a plugin the bank had left out
    (`extensions_disabled`) still ran its commands, while the API had left out its routes."""
    remember_options(CliState(data_dir=tmp_path / "node"))  # as `alliance --data-dir` would: not an earlier test's
    if setting is not None:
        monkeypatch.setenv(setting, str(value))
    plugin = BankCommands()
    cli = typer.Typer()

    @cli.command("noop")
    def noop() -> None:
        """A command so Typer keeps subcommands."""

    assert add_extension_commands(cli, ExtensionManager(extra_plugins={"bank_cli": plugin})) == [
        "bank-report", "bank-group"]
    results = [CliRunner().invoke(cli, args) for args in
               (["bank-report"], ["bank-group", "--region", "north", "run"])]
    if why is None:
        assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
        assert plugin.ran == ["function", "group callback north", "group run"]
    else:
        for result in results:
            assert result.exit_code == 1 and result.exception is not None
            assert str(result.exception) == (f"the bank_cli extension does not run on this node ({why}): its "
                                             "commands are off; see `alliance extensions list`")
            assert getattr(result.exception, "code", None) == "extension_not_running"
        assert plugin.ran == []
    helped = CliRunner().invoke(cli, ["bank-group", "--help"])  # help shows either way, with the app's own text
    assert helped.exit_code == 0 and "The bank's report commands." in helped.output and "--region" in helped.output


class CommandsTyperCannotBuild:
    """A plugin's commands as a bank might get them wrong: not a function, a parameter type Typer does not know."""

    @staticmethod
    def _bad_parameter(when: int | str) -> None:
        """Typer takes no union of types."""

    @staticmethod
    def _fine() -> None:
        typer.echo("fine")

    @staticmethod
    def noop() -> None:
        typer.echo("hijacked")

    @hookimpl
    def alliance_cli_commands(self) -> list[tuple[str, Any]]:
        # An empty name: Typer names the command after the function, here like an existing command.
        return [("not-a-function", 42), ("bad-parameter", self._bad_parameter), ("", self.noop), ("fine", self._fine)]


def test_a_plugin_command_typer_cannot_build_or_without_a_name_is_left_out_and_the_cli_still_runs(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Typer builds every command at each run: one it could not build ended every `alliance` command in a
    traceback, `node start` included, until the package was uninstalled."""
    remember_options(CliState(data_dir=tmp_path / "node"))  # as `alliance --data-dir` would: not an earlier test's
    cli = typer.Typer()

    @cli.command("noop")
    def noop() -> None:
        """A command so Typer keeps subcommands."""

    manager = ExtensionManager(enabled=["bank_cli"], extra_plugins={"bank_cli": CommandsTyperCannotBuild()})
    assert add_extension_commands(cli, manager) == ["fine"]
    assert "'not-a-function' not added" in caplog.text and "'bad-parameter' not added" in caplog.text
    assert "command name '' is not a word" in caplog.text
    for args in (["noop"], ["fine"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and result.exception is None, result.output
        assert "hijacked" not in result.output


def test_extensions_list_shows_plugin(example_plugin_installed: str, tmp_path: Path) -> None:
    from alliance_cli.main import app

    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "empty"), "extensions", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {e["name"]: e for e in json.loads(result.output)}
    assert listed["example_policy"]["hooks"] == ["alliance_cli_commands", "alliance_credit_decision",
                                                 "alliance_risk_signals"]
    assert listed["credit_platform"]["source"] == "builtin"


def test_node_start_refuses_a_plugin_installed_under_a_built_in_name(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The bank disables the built-in decision and installs its own under the same name: the built-in kept the
    name, so the plugin was never loaded nor listed, and every application went to review (no_decision)."""
    site = tmp_path / "site-packages"
    dist_info = site / "my_bank_rules-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-bank-rules\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[alliance.extensions]\ncredit_decision = alliance_example_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    node = NodeContext(load_settings(tmp_path / "data", extensions_disabled=["credit_decision"]))
    try:
        with pytest.raises(ConfigError, match="'credit_decision' of entry point my-bank-rules"):
            check_extension_names(node)
    finally:
        node.close()
        sys.modules.pop("alliance_example_plugin", None)
