"""Settings precedence, refusals of unsafe config, and network profiles."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import httpx
import pytest

from alliance_cli.main import run
from node import config
from node.chain.profiles import ProfileError, load_profile
from node.config import DEV_PASSPHRASE, ConfigError, Settings, load_settings, write_config
from node.setup import init_node
from tests.conftest import NODE_SETTINGS_IN_ENVIRONMENT


def test_env_overrides_toml_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(tmp_path, bank_name="Bank A", bank_code="BANKA", api_port=9100)
    write_config(settings)
    assert load_settings(tmp_path).api_port == 9100
    monkeypatch.setenv("ALLIANCE_API_PORT", "9200")
    assert load_settings(tmp_path).api_port == 9200
    assert load_settings(tmp_path).api_host == "127.0.0.1"


def test_node_settings_of_the_shell_do_not_reach_the_tests() -> None:
    """Run with ALLIANCE_DEPLOYMENT_FILE exported (an operator's shell), a deploying test wrote its contracts over the
    record of that running node."""
    assert NODE_SETTINGS_IN_ENVIRONMENT.isdisjoint(os.environ)
    assert "ALLIANCE_DEPLOYMENT_FILE" in NODE_SETTINGS_IN_ENVIRONMENT


def test_write_config_never_persists_the_passphrase(tmp_path: Path) -> None:
    write_config(load_settings(tmp_path, key_passphrase="a secret passphrase", bank_code="BANKA"))
    assert "secret" not in (tmp_path / "alliance.toml").read_text()


def test_write_config_keeps_the_database_password_from_other_users(tmp_path: Path) -> None:
    """The file was written with the process umask (0644 here) and holds the PostgreSQL password."""
    config = tmp_path / "alliance.toml"
    config.write_text("")
    config.chmod(0o644)
    previous = os.umask(0o022)
    try:
        write_config(load_settings(tmp_path, database_url="postgresql+psycopg://node:s3cret@db/alliance"))
    finally:
        os.umask(previous)
    assert config.stat().st_mode & 0o777 == 0o600
    assert load_settings(tmp_path).database_url == "postgresql+psycopg://node:s3cret@db/alliance"


@pytest.mark.parametrize(("url", "reason"), [
    ("postgres://node:s3cret@db/alliance", "unknown database type"),
    ("mysql://node:s3cret@db/alliance", "SQLite or PostgreSQL"),
    ("postgresql+psycopg2://node:s3cret@db/alliance", "driver psycopg2 is not installed"),
    ("node:s3cret at db", "not a database URL"),
])
def test_unsupported_database_url_is_a_config_error(tmp_path: Path, url: str, reason: str) -> None:
    """Each was a traceback of SQLAlchemy (NoSuchModuleError, ModuleNotFoundError, ArgumentError) in the first
    command that opened the store."""
    with pytest.raises(ConfigError, match=f"database_url: .*{reason}") as refused:
        load_settings(tmp_path, database_url=url)
    assert "s3cret" not in str(refused.value)


def test_relative_sqlite_database_url_is_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was relative to the working directory: a command run from another one opened another, empty store."""
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    assert load_settings(data_dir, database_url="sqlite:///bank.db").effective_database_url \
        == f"sqlite:///{(data_dir / 'bank.db').resolve()}"
    assert load_settings(data_dir, database_url="sqlite:////srv/bank.db").effective_database_url \
        == "sqlite:////srv/bank.db"
    assert load_settings(data_dir, database_url="sqlite://").effective_database_url == "sqlite://"


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "alliance.toml").write_text("api_port = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path)


def test_a_refused_setting_names_where_its_value_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal said `invalid configuration (<data dir>/alliance.toml)`, also for a bad environment variable:
    an operator looked in the file for a value that was not there."""
    toml = tmp_path / "alliance.toml"
    toml.write_text('api_port = 70000\nnetwork = "dev"\n')
    monkeypatch.setenv("ALLIANCE_SYNC_INTERVAL_S", "-1")
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path)
    assert f"api_port: Input should be less than or equal to 65535 (from {toml})" in str(refused.value)
    assert "sync_interval_s: Input should be greater than 0 (from ALLIANCE_SYNC_INTERVAL_S)" in str(refused.value)
    with pytest.raises(ConfigError, match=r"publish_batch_size: .* \(as given\)"):
        load_settings(tmp_path, api_port=8000, publish_batch_size=0)


def test_a_refused_combination_of_settings_is_not_blamed_on_the_toml_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ALLIANCE_API_TLS_CERTFILE set without its key file was refused `(from <data dir>/alliance.toml)`, a file that
    named neither setting."""
    toml = tmp_path / "alliance.toml"
    toml.write_text('network = "dev"\n')
    monkeypatch.setenv("ALLIANCE_API_TLS_CERTFILE", str(tmp_path / "node.crt"))
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path)
    assert f"go together: set both to serve HTTPS, or neither (from ALLIANCE_* variables and {toml} together)" \
        in str(refused.value)


def test_unknown_or_invalid_setting_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "alliance.toml").write_text('api_port = 70000\nnetwork = "dev"\n')
    with pytest.raises(ConfigError, match="api_port"):
        load_settings(tmp_path)
    (tmp_path / "alliance.toml").write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_settings(tmp_path)


def test_list_setting_from_env_not_json_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_EXTENSIONS_DISABLED", "marketing")
    with pytest.raises(ConfigError, match=r"extensions_disabled.*JSON"):
        load_settings(tmp_path)
    monkeypatch.setenv("ALLIANCE_EXTENSIONS_DISABLED", '["marketing"]')
    assert load_settings(tmp_path).extensions_disabled == ["marketing"]


@pytest.mark.parametrize("days", ["inf", "nan", "1e304", "0"])
def test_unusable_confidence_half_life_is_a_config_error(tmp_path: Path, days: str) -> None:
    # An infinite or huge half-life was accepted, and then every check failed with an OverflowError (HTTP 500).
    (tmp_path / "alliance.toml").write_text(f'confidence_half_life_days = {days}\n')
    with pytest.raises(ConfigError, match="confidence_half_life_days"):
        load_settings(tmp_path)


@pytest.mark.parametrize("seconds", ["inf", "1e300", "86401"])
def test_an_extension_timeout_no_wait_can_have_is_a_config_error(tmp_path: Path, seconds: str) -> None:
    # Accepted, and then every hook call of every extension failed with an OverflowError: each application went to
    # review (extension_failed:identity_recognition, ...), and nothing said why when the node started.
    (tmp_path / "alliance.toml").write_text(f'extension_timeout_s = {seconds}\n')
    with pytest.raises(ConfigError, match="extension_timeout_s"):
        load_settings(tmp_path)


def test_dev_passphrase_refused_outside_dev(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dev passphrase"):
        load_settings(tmp_path, network="consortium", rpc_url="http://127.0.0.1:8545", key_passphrase=DEV_PASSPHRASE)
    production = load_settings(tmp_path, network="consortium", rpc_url="http://127.0.0.1:8545")
    assert production.passphrase is None  # no built-in fallback outside dev
    assert load_settings(tmp_path).passphrase == DEV_PASSPHRASE


def test_rpc_url_required_outside_dev(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rpc_url is required"):
        load_settings(tmp_path, network="local")


def test_profiles_give_chain_facts(tmp_path: Path) -> None:
    dev = load_settings(tmp_path)
    assert (dev.effective_chain_id, dev.profile.gas_price, dev.profile.hardfork) == (31337, 0, "cancun")
    assert load_settings(tmp_path, chain_id=77).effective_chain_id == 77
    assert load_profile("consortium").chain_id == 1337420


def test_confirmations_come_from_the_profile_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The profile's depth was read and never used: the indexer stayed 0 blocks behind whatever it said.
    deep = dataclasses.replace(load_profile("dev"), confirmations=12)
    monkeypatch.setattr(Settings, "profile", property(lambda self: deep))
    assert load_settings(tmp_path).effective_confirmations == 12
    assert load_settings(tmp_path, confirmations=0).effective_confirmations == 0
    monkeypatch.setenv("ALLIANCE_CONFIRMATIONS", "3")
    assert load_settings(tmp_path).effective_confirmations == 3


def test_malformed_profile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("chain_id = 1\n")
    with pytest.raises(ProfileError, match="malformed"):
        load_profile("broken", tmp_path)
    with pytest.raises(ProfileError, match="no network profile"):
        load_profile("absent", tmp_path)


@pytest.mark.parametrize("url", ["http://[::1/x", "alerts.bank.internal/hook", "ftp://alerts.bank.internal/",
                                 "http:///hook", "http://alerts.bank.internal/\x00", "http://alerts:99999/"])
def test_risk_alert_webhook_url_must_be_an_http_url_with_a_host(tmp_path: Path, url: str) -> None:
    """A malformed webhook URL (httpx.InvalidURL at the first alert) failed the indexer's extension hook on every pass,
    and the alerts stayed pending; one that is not http(s) failed every delivery."""
    with pytest.raises(ConfigError, match=r"risk_alert_webhook_url: .*not an http\(s\) URL with a host, e.g. https://"):
        load_settings(tmp_path, risk_alert_webhook_url=url)


@pytest.mark.parametrize("url", ["http://256.1.1.1/hook", "http://xn--/hook", "http://\uff21lerts.bank.internal/hook",
                                 "http://alerts\u00a0bank.internal/hook"])
def test_a_webhook_url_httpx_cannot_send_to_is_refused(tmp_path: Path, url: str) -> None:
    """urlsplit takes these, httpx refuses them before any request (InvalidURL, IDNAError: not an HTTPError), so
    every alert's delivery raised out of the booking or indexer pass that made it, as for `http://[::1/x`."""
    with pytest.raises(httpx.InvalidURL if "xn--" not in url else ValueError):
        httpx.Request("POST", url)
    with pytest.raises(ConfigError, match=r"risk_alert_webhook_url: .*not an http\(s\) URL with a host, e.g. https://"):
        load_settings(tmp_path, risk_alert_webhook_url=url)


def test_an_empty_webhook_url_is_no_webhook_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ALLIANCE_RISK_ALERT_WEBHOOK_URL=` (a compose file's `${WEBHOOK:-}`) meant no webhook, as the node reads it
    everywhere (`if not risk_alert_webhook_url`); the URL check made such a node refuse to start."""
    monkeypatch.setenv("ALLIANCE_RISK_ALERT_WEBHOOK_URL", "")
    assert not load_settings(tmp_path).risk_alert_webhook_url
    assert not load_settings(tmp_path, risk_alert_webhook_url="").risk_alert_webhook_url


def test_a_refused_webhook_url_is_not_quoted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, risk_alert_webhook_url="http://node:s3cret@[::1/hook")
    assert "s3cret" not in str(refused.value)


def test_risk_alert_webhook_url_accepts_an_https_url_with_credentials_and_a_path(tmp_path: Path) -> None:
    url = "https://node:secret@alerts.bank.internal:8443/v1/hook?source=alliance"
    assert load_settings(tmp_path, risk_alert_webhook_url=url).risk_alert_webhook_url == url


@pytest.mark.parametrize(("content", "message"), [
    ("chain_id = 0\ngas_price = 0\nhardfork = 'cancun'\nconfirmations = 0\n", "chain_id must be .* at least 1"),
    ("chain_id = true\ngas_price = 0\nhardfork = 'cancun'\nconfirmations = 0\n", "chain_id must be an integer"),
    ("chain_id = 5\ngas_price = -1\nhardfork = 'cancun'\nconfirmations = 0\n", "gas_price must be .* at least 0"),
    ("chain_id = 5\ngas_price = 0\nhardfork = 'cancun'\nconfirmations = 1.9\n", "confirmations must be an integer"),
    ("chain_id = 5\ngas_price = 0\nhardfork = ''\nconfirmations = 0\n", "hardfork must be"),
    ("chain_id = 5\ngas_price = 0\nconfirmations = 0\n", "hardfork is missing"),
    ("chain_id = 5\nchain_id = 6\n", "malformed"),
], ids=["zero_chain_id", "boolean", "negative_gas_price", "fractional_depth", "empty_hardfork", "missing", "not_toml"])
def test_profile_with_values_no_chain_has_is_refused(tmp_path: Path, content: str, message: str) -> None:
    """int() took `true` as 1 and 1.9 as 1; a zero chain id or a negative depth or price was taken as given."""
    (tmp_path / "odd.toml").write_text(content)
    with pytest.raises(ProfileError, match=message):
        load_profile("odd", tmp_path)


def test_malformed_profile_fails_a_command_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Was a ProfileError traceback from every command of a node on that network."""
    profiles = tmp_path / "chain_config"
    profiles.mkdir()
    (profiles / "local.toml").write_text("chain_id = 31337\nconfirmations = 0x\n")
    monkeypatch.setattr(config, "load_profile", lambda network: load_profile(network, profiles))
    data_dir = tmp_path / "node-data"
    init_node(load_settings(data_dir, network="local", rpc_url="http://127.0.0.1:9"), bank_name="Bank A",
              bank_code="BANKA", passphrase="a long enough passphrase")
    with pytest.raises(SystemExit) as exited:
        run(["--data-dir", str(data_dir), "chain", "status"])
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: network profile {profiles / 'local.toml'} is malformed")


def test_a_passphrase_in_the_toml_is_a_config_error(tmp_path: Path) -> None:
    """A key_passphrase line in alliance.toml was read and opened the keys beside it: the passphrase protected the
    keys from nobody who could copy the data dir. It comes from ALLIANCE_KEY_PASSPHRASE or a prompt only."""
    (tmp_path / "alliance.toml").write_text('bank_code = "BANKA"\nkey_passphrase = "kept-beside-the-keys"\n')
    with pytest.raises(ConfigError, match=r"holds key_passphrase.*ALLIANCE_KEY_PASSPHRASE") as refused:
        load_settings(tmp_path)
    assert "kept-beside-the-keys" not in str(refused.value)
