"""API keys with roles. Secrets are 256-bit random, so a plain SHA-256 stored hash suffices
(no password stretching needed: nothing to enumerate)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.errors import InvalidInput, NotFound
from node.store.models import ApiKey, utcnow
from node.text import excerpt, printable_name

KEY_PREFIX = "ak"
_KEY_ID_BYTES = 8
_KEY_ID = re.compile(f"[0-9a-f]{{{2 * _KEY_ID_BYTES}}}")  # secrets.token_hex(_KEY_ID_BYTES)
MAX_LABEL = 200  # api_keys.label


class Role(StrEnum):
    operator = "operator"  # runs the node: governance, keys, configuration
    analyst = "analyst"  # reports and queries fraud indicators
    auditor = "auditor"  # reads assets and attests
    workflow = "workflow"  # the bank's credit workflow: checks and applications


class InvalidApiKey(Exception):
    """The key is malformed, unknown or revoked."""


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    role: Role
    label: str
    token: str  # shown once; only its hash is stored


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    role: Role
    label: str
    created_at: datetime
    revoked: bool


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, role: Role | str, label: str = "") -> IssuedKey:
    role = Role(role)
    if len(label) > MAX_LABEL:
        raise InvalidInput(f"a key's label has at most {MAX_LABEL} characters", code="invalid_label")
    printable_name(label, field="the label")  # shown in `apikey list`, where a control character would garble it
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(key_id=key_id, role=role.value, label=label, secret_sha256=_digest(secret)))
    return IssuedKey(key_id, role, label, f"{KEY_PREFIX}_{key_id}_{secret}")


def authenticate(session: Session, token: str) -> KeyInfo:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not _KEY_ID.fullmatch(key_id) or not secret:
        raise InvalidApiKey("malformed API key")
    row = session.get(ApiKey, key_id)
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        raise InvalidApiKey("unknown API key")
    if row.revoked_at is not None:
        raise InvalidApiKey("revoked API key")
    return _info(row)


def revoke_api_key(session: Session, key: str) -> KeyInfo:
    """Revoke the key with id `key`, or the one a whole token names: an operator handed a leaked token revokes it as
    it is (it was refused as an unknown id, its secret written out in the error, to the terminal and its logs)."""
    prefix, _, rest = key.partition("_")
    key_id = rest.partition("_")[0] if prefix == KEY_PREFIX else key
    # Only ids of the issued form are looked up: PostgreSQL refuses a NUL in a query parameter with an error.
    row = session.get(ApiKey, key_id) if _KEY_ID.fullmatch(key_id) else None
    if row is None:
        # A refusal with its code, as every other: InvalidApiKey (the API's 401) had none, the CLI's line ended bare.
        raise NotFound(f"no API key {excerpt(key_id)}", code="api_key_not_found")
    row.revoked_at = row.revoked_at or utcnow()
    return _info(row)


def list_api_keys(session: Session) -> list[KeyInfo]:
    return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, Role(row.role), row.label, row.created_at, row.revoked_at is not None)
