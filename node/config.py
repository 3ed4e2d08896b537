"""Node settings: one pydantic-settings `Settings`, from `ALLIANCE_*` env over the data dir's TOML.

Precedence, highest first: explicit arguments, environment variables (`ALLIANCE_API_PORT=9000`),
`<data dir>/alliance.toml` (written by `alliance init`), defaults. Secrets (the key passphrase)
are never written to the TOML file.
"""

from __future__ import annotations

import json
import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from node.chain.devchain import PERSISTED_STATES
from node.chain.profiles import NetworkProfile, ProfileError, load_profile
from node.modules.selection_snapshots import SNAPSHOT_CAPACITY, SNAPSHOT_TTL_S
from node.paths import CHAIN_CONFIG_DIR
from node.private_files import write_private_text
from node.text import excerpt

DEFAULT_DATA_DIR = Path(".alliance")
CONFIG_FILE = "alliance.toml"
# Only the dev network may run on this well-known passphrase; see `Settings._refuse_dev_secrets`.
DEV_PASSPHRASE = "alliance-dev-passphrase"
# The stores the migrations are written and tested for (SQLAlchemy backend names).
DATABASE_BACKENDS = ("sqlite", "postgresql")


class ConfigError(Exception):
    """The configuration is missing, malformed or unsafe; the message says which setting."""


class Network(StrEnum):
    dev = "dev"  # a local anvil the node starts itself
    local = "local"  # any JSON-RPC URL, e.g. an anvil or Besu someone else runs
    consortium = "consortium"  # the production Besu QBFT network


def _httpx_can_send_to(url: str) -> bool:
    """Whether httpx, which POSTs the risk alerts, takes `url`: it refuses hosts urlsplit takes (256.1.1.1, an empty
    or non-ASCII IDNA label) with InvalidURL or IDNAError, not an HTTPError, raised out of every alert's delivery."""
    import httpx  # here: only a node with a webhook pays for importing it

    try:
        httpx.Request("POST", url)
    except (httpx.InvalidURL, ValueError):
        return False
    return True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALLIANCE_", extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    network: Network = Network.dev
    rpc_url: str | None = Field(default=None, description="JSON-RPC URL; derived for the dev network")
    dev_chain_port: int = Field(default=8545, ge=1, le=65535)
    dev_chain_history_blocks: int = Field(
        default=PERSISTED_STATES, ge=0,
        description="past blocks whose state the dev chain keeps for reads at an earlier block (about 440 KB each)")
    chain_id: int | None = Field(default=None, ge=1, description="overrides the network profile's chain id")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in the data dir")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_tls_certfile: Path | None = Field(default=None, description="PEM certificate (chain) to serve HTTPS with")
    api_tls_keyfile: Path | None = Field(default=None, description="its unencrypted PEM private key")
    bank_name: str = ""
    bank_code: str = ""
    key_passphrase: SecretStr | None = None
    deployment_file: Path | None = Field(default=None, description="contract addresses; per-network default")
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    # Fraud ledger: publisher
    publish_batch_size: int = Field(default=500, ge=1, le=5000, description="records per publishBatch")
    publish_max_wait_s: float = Field(default=2.0, ge=0, description="oldest queued record waits at most this")
    publish_interval_s: float = Field(default=0.5, gt=0, description="publisher poll period")
    # Fraud ledger: indexer and mirror
    confirmations: int | None = Field(default=None, ge=0, description="blocks behind head the mirror stays; default "
                                      "the network profile's (0 on QBFT, which has immediate finality)")
    log_chunk_blocks: int = Field(default=2_000, ge=1, description="blocks per eth_getLogs request")
    sync_interval_s: float = Field(default=1.0, gt=0, description="indexer poll period")
    mirror_stale_after_s: float = Field(default=30.0, gt=0, description="checks are marked stale after this lag")
    # Fraud ledger: derived state (documented in docs/fraud-ledger.md)
    # Finite and bounded: every check computes round(days * 86400) from it, which overflows for inf or ~1e304.
    confidence_half_life_days: float = Field(default=365.0, gt=0, le=1_000_000, allow_inf_nan=False)
    dispute_window_days: int = Field(default=30, ge=1)
    # Fraud ledger: key distribution
    key_distribution_interval_s: float = Field(default=5.0, gt=0)
    # Retention of personal data (node.ledger.retention, docs/operations.md)
    check_log_retention_days: int | None = Field(
        default=None, ge=1, le=36_500, description="query-log entries older than this are deleted; unset: kept")
    application_retention_days: int | None = Field(
        default=None, ge=1, le=36_500, description="an application's applicant is erased this long after it is no "
        "longer needed (decided and not booked; booked and repaid); unset: kept")
    retention_interval_s: float = Field(default=3600.0, gt=0, description="retention pass period")
    # Credit workflow extensions (docs/extensions.md)
    extensions_enabled: list[str] | None = Field(
        default=None, description="extensions in call order; unset: every built-in, then every installed plugin")
    extensions_disabled: list[str] = Field(default_factory=list, description="extensions left out")
    # At most a day: a wait past threading.TIMEOUT_MAX (inf, 1e300) raised OverflowError in every hook call, and every
    # application went to review (extension_failed) with nothing said at start.
    extension_timeout_s: float = Field(default=2.0, ge=0, le=86_400, allow_inf_nan=False,
                                       description="per hook call (at most a day); 0 runs without a limit")
    credit_policy_file: Path | None = Field(
        default=None, description="TOML scorecard, decision rules, velocity and ABS eligibility; defaults built in")
    risk_alert_webhook_url: str | None = Field(default=None, description="POSTed each new risk alert (no raw data)")
    # Page snapshots of GET /v1/abs-factory/eligible (node.modules.selection_snapshots), per API process.
    eligible_snapshots: int = Field(
        default=SNAPSHOT_CAPACITY, ge=1, le=1_000, description="listings kept for their later pages (about 8 MB each "
        "at 100,000 loans); the least recently read leaves first")
    eligible_snapshot_ttl_s: float = Field(
        default=SNAPSHOT_TTL_S, gt=0, le=86_400, description="a listing's later pages are served this long after its "
        "first; then cursor_expired")

    @field_validator("rpc_url", "risk_alert_webhook_url")
    @classmethod
    def _http_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        """An http(s) URL with a host: anything else was written to the config by `init` and failed at the first
        chain call, or (the webhook) failed every alert delivery and, malformed (`http://[::1/x`), the indexer's
        extension hook on every pass. Not quoted (it may carry credentials)."""
        if url is None or (url == "" and info.field_name == "risk_alert_webhook_url"):
            return None  # an empty webhook URL (`ALLIANCE_RISK_ALERT_WEBHOOK_URL=`) is no webhook, as it always was
        if not is_http_url(url) or (info.field_name == "risk_alert_webhook_url" and not _httpx_can_send_to(url)):
            example = "http://127.0.0.1:8545" if info.field_name == "rpc_url" else "https://alerts.bank.internal/hook"
            raise ValueError(f"not an http(s) URL with a host, e.g. {example}")
        return url

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str | None) -> str | None:
        """A URL SQLAlchemy parses, of SQLite or PostgreSQL, with a driver installed: otherwise the first command
        failed in the engine with a traceback. The messages never quote the URL, which may hold a password."""
        if url is None:
            return None
        example = "e.g. postgresql+psycopg://user:password@host:5432/alliance"
        try:
            dialect = make_url(url).get_dialect()
        except NoSuchModuleError:  # an ArgumentError too
            raise ValueError(f"unknown database type; {example} (postgres:// is not one)") from None
        except ArgumentError:
            raise ValueError(f"not a database URL ({example})") from None
        if dialect.name not in DATABASE_BACKENDS:
            raise ValueError(f"the node's store is SQLite or PostgreSQL ({example}), not {dialect.name}")
        try:
            dialect.import_dbapi()
        except ImportError:
            raise ValueError(f"the database driver {dialect.driver} is not installed; {example}") from None
        return url

    @model_validator(mode="after")
    def _tls_files_in_pairs(self) -> Settings:
        if (self.api_tls_certfile is None) != (self.api_tls_keyfile is None):
            raise ValueError("api_tls_certfile and api_tls_keyfile go together: set both to serve HTTPS, or neither")
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> Settings:
        if self.network != Network.dev:
            if self.key_passphrase is not None and self.key_passphrase.get_secret_value() == DEV_PASSPHRASE:
                raise ValueError("the dev passphrase may only be used on the dev network")
            if not self.rpc_url:
                raise ValueError(f"rpc_url is required on the {self.network} network")
        return self

    @property
    def profile(self) -> NetworkProfile:
        try:
            return load_profile(self.network.value)
        except ProfileError as exc:  # a config problem like any other: one line, not a traceback
            raise ConfigError(str(exc)) from exc

    @property
    def effective_chain_id(self) -> int:
        return self.chain_id or self.profile.chain_id

    @property
    def effective_confirmations(self) -> int:
        return self.confirmations if self.confirmations is not None else self.profile.confirmations

    @property
    def effective_rpc_url(self) -> str:
        if self.network == Network.dev:
            return self.rpc_url or f"http://127.0.0.1:{self.dev_chain_port}"
        assert self.rpc_url is not None  # enforced by the validator
        return self.rpc_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / 'node.db').resolve()}"
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
                and not url.database.startswith("file:") and not Path(url.database).is_absolute():
            # Relative to the data dir, like everything else of the node: relative to the working directory, a
            # command run from elsewhere opened (and created) another, empty store.
            url = url.set(database=str((self.data_dir / url.database).resolve()))
            return url.render_as_string(hide_password=False)
        return self.database_url

    @property
    def passphrase(self) -> str | None:
        if self.key_passphrase is not None:
            return self.key_passphrase.get_secret_value()
        return DEV_PASSPHRASE if self.network == Network.dev else None

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def signing_key_file(self) -> Path:
        return self.keys_dir / "signing-key.json"

    @property
    def encryption_key_file(self) -> Path:
        return self.keys_dir / "encryption-key.pem"

    @property
    def next_encryption_key_file(self) -> Path:
        """The X25519 key a replacement under way puts in place of `encryption_key_file`
        (node.encryption_key_replacement)."""
        return self.keys_dir / "encryption-key.next.pem"

    @property
    def chain_state_dir(self) -> Path:
        return self.data_dir / "chain"

    @property
    def effective_deployment_file(self) -> Path:
        if self.deployment_file is not None:
            return self.deployment_file
        # The dev chain lives in the data dir, so its addresses do too; shared networks' records
        # are committed under chain_config/deployments.
        if self.network == Network.dev:
            return self.data_dir / "deployments" / "dev.json"
        return CHAIN_CONFIG_DIR / "deployments" / f"{self.network}.json"

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir or os.environ.get("ALLIANCE_DATA_DIR") or DEFAULT_DATA_DIR)


def _source_of(location: tuple[Any, ...], toml_path: Path, overrides: dict[str, Any]) -> str:
    """Where a refused setting's value came from, in the order the sources are read: a bad `ALLIANCE_RPC_URL` was
    blamed on alliance.toml, where an operator looked for it in vain."""
    field = str(location[0]) if location else ""
    if not field:  # a rule between settings (TLS files in pairs, rpc_url off dev): its parts may come from anywhere
        return f"from ALLIANCE_* variables and {toml_path} together"
    if field in overrides:
        return "as given"
    variable = f"ALLIANCE_{field.upper()}"
    if field and any(key.upper() == variable for key in os.environ):
        return f"from {variable}"
    return f"from {toml_path}"


def is_http_url(url: str) -> bool:
    """Whether `url` is an http(s) URL with a host (and a port in range, if any), which the HTTP clients can send to."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    # A control character is refused by the HTTP clients at the first request, not by urlsplit.
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in url))


def load_settings(data_dir: Path | str | None = None, **overrides: Any) -> Settings:
    directory = resolve_data_dir(data_dir)
    toml_path = directory / CONFIG_FILE
    try:
        configured = toml_path.exists()
    except OSError as exc:
        # exists() says False only of a path that is not there: a name too long, or a directory this user may not
        # search, raised its OSError, a traceback of every command given such a --data-dir.
        raise ConfigError(f"data dir {excerpt(str(directory))} cannot be used: {exc.strerror or exc}") from None
    if configured:
        try:
            in_file = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"{toml_path} is not UTF-8 text") from None
        except OSError as exc:  # a directory in its place, say
            raise ConfigError(f"{toml_path} cannot be read: {exc.strerror or exc}") from None
        if "key_passphrase" in in_file:
            # The file sits beside the keys the passphrase opens, in every copy of the data dir: read from it, a
            # passphrase protected them from nobody who could read the directory.
            raise ConfigError(f"{toml_path} holds key_passphrase, which is read only from ALLIANCE_KEY_PASSPHRASE or "
                              "a prompt: remove it from the file")

    class _DataDirSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path)

    try:
        return _DataDirSettings(data_dir=directory, **overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']} "
                             f"({_source_of(e['loc'], toml_path, overrides)})" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    except SettingsError as exc:
        # A list setting from the environment must be JSON (`ALLIANCE_EXTENSIONS_DISABLED='["marketing"]'`);
        # pydantic-settings fails before validation, so this escaped as a traceback. Its message names the
        # field, never the value.
        raise ConfigError(f"invalid environment variable: {exc}; list settings take JSON, "
                          f"e.g. ALLIANCE_EXTENSIONS_DISABLED='[\"marketing\"]'") from exc


_PERSISTED = ("network", "rpc_url", "dev_chain_port", "chain_id", "deployment_file", "database_url", "api_host",
              "api_port", "bank_name", "bank_code")


def write_config(settings: Settings) -> Path:
    """Write the settings other than the passphrase as TOML (JSON string escapes are valid TOML basic strings)."""
    lines = ["# Alliance node configuration, written by `alliance init`. ALLIANCE_* env vars override it."]
    for name in _PERSISTED:
        value = getattr(settings, name)
        if value is None:
            continue
        rendered = str(value) if isinstance(value, int) and not isinstance(value, bool) else json.dumps(str(value))
        lines.append(f"{name} = {rendered}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # database_url may carry the database's password: readable by the node's own user only, like its keys.
    write_private_text(settings.config_file, "\n".join(lines) + "\n")
    return settings.config_file
