"""Replacing the bank's signing key, its identity on chain, after a compromise or for key hygiene.

The AllianceRegistry moves a member to a new signing address only by a `rotate` proposal that other members
pass. The node therefore does it in two steps around that vote:

1. `prepare_new_signer` makes the new key beside the current one (`keys/signing-key.next.json`, encrypted under
   the same passphrase) and gives its address for the proposal. The current key keeps signing meanwhile.
2. Once the chain has the new address as this bank's signer, `activate_new_signer` puts the new key in place of
   the current one (kept as `keys/signing-key.retired-<address>.json`). A running node takes it up at its next signed
   write or worker pass, without a restart (node.signer_switch).

`signing-key.json` is never missing, even for a moment: the old key is hard-linked to its retired name first, then
the new one is renamed over it, so a crash at any point leaves a node that starts, and running activation again
finishes the step.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from node.chain.signer import KeystoreError, Signer, keystore_address, load_keystore, write_keystore
from node.config import Settings
from node.errors import Conflict, InvalidInput
from node.private_files import replace_durably
from node.runtime import NodeContext
from node.signer_switch import retired_signing_key_file


@dataclass(frozen=True)
class NewSigner:
    address: str
    path: Path


@dataclass(frozen=True)
class ActivatedSigner:
    old_address: str
    new_address: str
    member_id: int
    retired_path: Path


def next_signing_key_file(settings: Settings) -> Path:
    return settings.keys_dir / "signing-key.next.json"


def prepared_signer(settings: Settings) -> str | None:
    """The address of the signing key `prepare_new_signer` made and `activate_new_signer` has not put in place yet
    (shown by `alliance node status`: once the members pass the rotation, the node signs with a key the chain no longer
    takes until it is activated); None if none is prepared, "unreadable" for a file that does not name one."""
    path = next_signing_key_file(settings)
    if not path.exists():
        return None
    try:
        return keystore_address(path)
    except KeystoreError:
        return "unreadable"


def prepare_new_signer(node: NodeContext) -> NewSigner:
    """Make the bank's next signing key beside the current one; refused if one is prepared already."""
    path = next_signing_key_file(node.settings)
    if path.exists():
        raise _prepared_already(path)
    node.signer  # noqa: B018 - unlocks the current key: the new one is written under the same, proven passphrase
    signer = Signer.generate()
    try:
        write_keystore(path, signer, node.passphrase)
    except FileExistsError:  # another run made it a moment ago
        raise _prepared_already(path) from None
    return NewSigner(signer.address, path)


def _prepared_already(path: Path) -> Conflict:
    try:
        address = keystore_address(path)
    except KeystoreError:
        return Conflict(f"{path} is there but unreadable (a `new-signer` cut short?): delete it and run again",
                        code="new_signer_prepared")
    return Conflict(f"a new signing key is prepared already ({address}): have another member propose `rotate` to it, "
                    "then run `alliance key activate-signer`", code="new_signer_prepared")


def activate_new_signer(node: NodeContext) -> ActivatedSigner:
    """Sign with the prepared key from now on, once the chain has its address as this bank's signer."""
    settings = node.settings
    path, current = next_signing_key_file(settings), settings.signing_key_file
    if not path.exists():
        raise InvalidInput(f"no new signing key is prepared (this node signs as {node.address}): "
                           "`alliance key new-signer` makes one", code="no_new_signer")
    try:
        new_address = load_keystore(path, node.passphrase).address  # it must open before anything moves
    except KeystoreError as exc:
        raise InvalidInput(f"the prepared signing key cannot be used: {exc}", code="new_signer_unusable") from None
    registry = node.registry()
    member_id = registry.member_id_of(new_address)
    if member_id == 0:
        raise Conflict(f"the chain does not have {new_address} as a member's signer yet: another member proposes "
                       f"`alliance member propose rotate {settings.bank_code or 'BANK'} --new-account {new_address}` "
                       "and the members vote it through; this node keeps signing as "
                       f"{node.address} until then", code="rotation_pending")
    member = registry.member(member_id)
    if member.bank_code != settings.bank_code:  # cannot happen for a fresh key unless the wrong file was put there
        raise Conflict(f"{new_address} signs for member {member_id} ({member.bank_code}), not for this bank "
                       f"({settings.bank_code})", code="new_signer_of_another_member")
    old_address = node.address
    retired = retired_signing_key_file(settings, old_address)
    with suppress(FileExistsError):  # linked by an activation that stopped before the rename
        os.link(current, retired)
    replace_durably(path, current)  # the retired link too; the last step, which a running node takes as the switch
    return ActivatedSigner(old_address, new_address, member_id, retired)

