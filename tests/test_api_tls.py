"""HTTPS for the API: the TLS files are checked before anything starts, and a node serves HTTPS with them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.api_tls import TlsUnusable, check_tls_files, is_loopback
from node.config import ConfigError, load_settings
from node.paths import PROJECT_ROOT
from node.server import serve
from tests.conftest import TEST_PASSPHRASE, LedgerNodes, free_port
from tests.integration.test_node_stop import ALLIANCE, alive


def write_pair(directory: Path, name: str = "node", *, password: bytes | None = None) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alliance node")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return certfile, keyfile


def test_check_tls_files_accepts_a_matching_pair(tmp_path: Path) -> None:
    check_tls_files(*write_pair(tmp_path))


def test_check_tls_files_refuses_a_key_of_another_certificate(tmp_path: Path) -> None:
    certfile, _ = write_pair(tmp_path, "one")
    _, other_key = write_pair(tmp_path, "two")
    with pytest.raises(TlsUnusable, match="the key is not the certificate's"):
        check_tls_files(certfile, other_key)


def test_check_tls_files_refuses_missing_unreadable_encrypted_and_garbage_files(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path)
    # Each message names the file at fault: ssl's own errors name none ("None does not exist").
    with pytest.raises(TlsUnusable, match=f"{re.escape(str(tmp_path / 'absent.crt'))} does not exist"):
        check_tls_files(tmp_path / "absent.crt", keyfile)
    with pytest.raises(TlsUnusable, match=f"{re.escape(str(tmp_path / 'absent.key'))} does not exist"):
        check_tls_files(certfile, tmp_path / "absent.key")
    with pytest.raises(TlsUnusable, match=f"cannot read {re.escape(str(tmp_path))} "):
        check_tls_files(certfile, tmp_path)  # a directory
    _, encrypted = write_pair(tmp_path, "locked", password=b"secret")
    locked_cert = tmp_path / "locked.crt"
    with pytest.raises(TlsUnusable, match="encrypted"):
        check_tls_files(locked_cert, encrypted)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsUnusable, match="not a PEM certificate"):
        check_tls_files(garbage, keyfile)


def test_tls_settings_go_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        load_settings(tmp_path, api_tls_certfile=tmp_path / "node.crt")
    settings = load_settings(tmp_path, api_tls_certfile=tmp_path / "a", api_tls_keyfile=tmp_path / "b")
    assert settings.api_tls_keyfile == tmp_path / "b"


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("node.bank.example")


def _env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "ALLIANCE_DATA_DIR": str(data_dir), "ALLIANCE_DEV_CHAIN_PORT": str(free_port()),
           "ALLIANCE_KEY_PASSPHRASE": TEST_PASSPHRASE, "PYTHONPATH": str(PROJECT_ROOT)}
    for name in ("ALLIANCE_RPC_URL", "ALLIANCE_DATABASE_URL"):
        env.pop(name, None)
    return env


def test_node_start_with_unusable_tls_files_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    certfile, _ = write_pair(tmp_path, "one")
    _, other_key = write_pair(tmp_path, "two")
    data_dir = tmp_path / "alliance"
    env = {**_env(data_dir), "ALLIANCE_API_TLS_CERTFILE": str(certfile), "ALLIANCE_API_TLS_KEYFILE": str(other_key)}
    subprocess.run([*ALLIANCE, "init", "--bank-name", "Bank A", "--bank-code", "BANKA"], env=env, check=True,
                   capture_output=True)
    done = subprocess.run([*ALLIANCE, "node", "start", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "the key is not the certificate's" in done.stderr
    assert not (data_dir / "chain" / "anvil.pid").exists()  # the dev chain was not started


@pytest.mark.slow
def test_node_serves_https_with_its_tls_files(tmp_path: Path) -> None:
    certfile, keyfile = write_pair(tmp_path)
    data_dir = tmp_path / "alliance"
    env = {**_env(data_dir), "ALLIANCE_API_TLS_CERTFILE": str(certfile), "ALLIANCE_API_TLS_KEYFILE": str(keyfile)}
    subprocess.run([*ALLIANCE, "init", "--bank-name", "Bank A", "--bank-code", "BANKA"], env=env, check=True,
                   capture_output=True)
    port = free_port()
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        node = subprocess.Popen([*ALLIANCE, "node", "start", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    trusted = ssl.create_default_context(cafile=str(certfile))
    try:
        health = None
        for _ in range(300):
            assert node.poll() is None, log_path.read_text()
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/health", verify=trusted, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # nor HTTPS to a client that does not trust the certificate
            httpx.get(f"https://127.0.0.1:{port}/health", timeout=5)
        assert f"serving on https://127.0.0.1:{port}" in log_path.read_text()
    finally:
        node.terminate()
        node.wait(timeout=60)
        pid_file = data_dir / "chain" / "anvil.pid"
        if pid_file.exists() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 15)


def test_node_bound_beyond_loopback_without_tls_files_warns(ledger_nodes: LedgerNodes, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The threat model's defence against API keys read off the network: a plain-HTTP node reachable from other
    machines says so when it starts; one on loopback, or serving HTTPS, does not."""
    node = ledger_nodes.nodes[0]
    monkeypatch.setattr("node.server._serve_on", lambda *_, **__: None)  # the warning comes once bound, before this
    with caplog.at_level(logging.WARNING, logger="node.server"):
        serve(node, demo=False, host="0.0.0.0", port=free_port())
        assert "serving plain HTTP on 0.0.0.0: API keys cross the network in clear" in caplog.text
        caplog.clear()
        serve(node, demo=False, host="127.0.0.1", port=free_port())
        node.settings.api_tls_certfile, node.settings.api_tls_keyfile = write_pair(tmp_path)
        serve(node, demo=False, host="0.0.0.0", port=free_port())
    assert "plain HTTP" not in caplog.text
