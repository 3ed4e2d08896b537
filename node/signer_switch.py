"""How a running node tells that `alliance key activate-signer` (node.signer_rotation), a process of its own, put a new
signing key in place of the one the node signs with, and what it leaves for `alliance node status` when that key
does not open.

The node does not decrypt the key file again at each signed write (a scrypt of about a second): it keeps the identity
of the file it loaded (device, inode, size, modification time: one `stat`), and only when that changes reads the
address the new file names in clear. An activation renames the new key over `keys/signing-key.json` as its last step,
after hard-linking the old one to `signing-key.retired-<old address>.json`: a changed file naming another address,
with the old key at its retired name, is a finished activation, which has checked on chain that the members passed the
rotation. An activation cut short (the link made, the rename not) leaves the file as it was, so it is no switch; nor is
a file replaced by hand (no retired copy of the key it replaced), which the node leaves until it is restarted.

The note of a key that did not open (`<data_dir>/signing-key-unusable.json`) is written by the node that tried it and
read by `alliance node status` and `GET /v1/node/status`; it stands only while the key file is the one that did not
open, so a file repaired since (or a node restarted on it) is not reported as unusable.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.chain.signer import KeystoreError, keystore_address
from node.config import Settings
from node.errors import AllianceError
from node.private_files import write_private_text


class SigningKeyUnusable(AllianceError):
    """The key an activation put in place does not open with the node's passphrase: nothing can be signed."""

    code = "signing_key_unusable"
    http_status = 503


@dataclass(frozen=True)
class KeyFileIdentity:
    device: int
    inode: int
    size: int
    mtime_ns: int


def key_file_identity(path: Path) -> KeyFileIdentity | None:
    """The identity of the file at `path` now; None if there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return KeyFileIdentity(found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def retired_signing_key_file(settings: Settings, address: str) -> Path:
    """Where an activation keeps the key of `address` it replaced."""
    return settings.keys_dir / f"signing-key.retired-{address.lower()}.json"


def named_address(path: Path) -> str | None:
    """The address the keystore at `path` names in clear (no passphrase needed); None if it names none."""
    try:
        return keystore_address(path)
    except KeystoreError:
        return None


def activated_over(settings: Settings, address: str, current: str | None) -> bool:
    """Whether the key file, which now names `current` (None: names no address), is the key an activation put in place
    of `address`'s: another key, and `address`'s kept at its retired name (made before the rename)."""
    if current is not None and current.lower() == address.lower():
        return False  # the same key, written again
    retired = named_address(retired_signing_key_file(settings, address))
    return retired is not None and retired.lower() == address.lower()


@dataclass(frozen=True)
class UnusableSigningKey:
    address: str | None  # the address the key file names; None if it names none
    error: str
    since: str  # ISO 8601, UTC
    identity: KeyFileIdentity

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "error": self.error, "since": self.since}


def unusable_note_file(settings: Settings) -> Path:
    return settings.data_dir / "signing-key-unusable.json"


def note_unusable(settings: Settings, identity: KeyFileIdentity | None, address: str | None, error: str) -> None:
    if identity is None:  # no file to pin the note to: the node's error says it
        return
    note = UnusableSigningKey(address, error, datetime.now(UTC).isoformat(timespec="seconds"), identity)
    write_private_text(unusable_note_file(settings), json.dumps(asdict(note)))


def clear_unusable(settings: Settings) -> None:
    unusable_note_file(settings).unlink(missing_ok=True)


def unusable_signing_key(settings: Settings) -> UnusableSigningKey | None:
    """The note of the key file that did not open in the node, while the key file is still that one."""
    try:
        fields = json.loads(unusable_note_file(settings).read_text())
        note = UnusableSigningKey(fields["address"], fields["error"], fields["since"],
                                  KeyFileIdentity(**fields["identity"]))
    except (OSError, ValueError, KeyError, TypeError):  # none, or not one this node wrote whole
        return None
    return note if key_file_identity(settings.signing_key_file) == note.identity else None
