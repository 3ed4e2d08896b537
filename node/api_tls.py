"""TLS for the node's API: API keys travel in a header, so anything beyond loopback should be HTTPS.

The certificate and key are PEM files named by the settings `api_tls_certfile` and `api_tls_keyfile`
(both or neither). They are loaded once before the node binds its address or starts anything, so a missing
file, a key that does not match the certificate, or an encrypted key is one readable error at start instead
of a traceback from uvicorn after the workers run.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from node.config import Settings
from node.errors import AllianceError


class TlsUnusable(AllianceError):
    code = "tls_unusable"


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) of the API, or None to serve plain HTTP."""
    if settings.api_tls_certfile is None or settings.api_tls_keyfile is None:
        return None  # both or neither, checked by Settings
    return settings.api_tls_certfile, settings.api_tls_keyfile


def check_tls_files(certfile: Path, keyfile: Path) -> None:
    """Raise TlsUnusable unless the pair makes a TLS server context, as uvicorn will build it."""
    for path in (certfile, keyfile):
        _check_readable(path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on the terminal at every start.
        context.load_cert_chain(certfile, keyfile, password=b"")
    except ssl.SSLError as exc:
        raise TlsUnusable(f"cannot use the API's TLS files {certfile} and {keyfile}: {_why(exc, keyfile)}") from None


def _check_readable(path: Path) -> None:
    """Open `path` here: the OSError of `load_cert_chain` names no file (its `filename` is None), so the operator
    was told `None does not exist` without learning which of the two files it was."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise TlsUnusable(f"cannot use the API's TLS files: {path} does not exist") from None
    except OSError as exc:
        raise TlsUnusable(f"cannot use the API's TLS files: cannot read {path} ({exc.strerror})") from None


def _why(error: ssl.SSLError, keyfile: Path) -> str:
    if error.reason == "KEY_VALUES_MISMATCH":
        return "the key is not the certificate's"
    try:
        encrypted = b"ENCRYPTED" in keyfile.read_bytes()[:4096]  # PKCS#8 or the legacy Proc-Type header
    except OSError:
        encrypted = False
    if encrypted:
        return "the key is encrypted; give an unencrypted key, readable by the node's user only"
    return f"not a PEM certificate and its private key ({error.reason or error.strerror or error})"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (an address or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
