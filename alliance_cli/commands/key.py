"""`alliance key sync|rotate|status`: the alliance hashing key, per epoch; `new-signer|activate-signer`: replacing
the bank's signing key; `replace-encryption-key`: replacing its X25519 key. Never prints a private key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from alliance_cli import console
from alliance_cli.console import JsonOption
from alliance_cli.state import node_context
from node.encryption_key_replacement import replace_encryption_key
from node.ledger import key_distribution
from node.ledger.key_distribution import KeySyncResult
from node.signer_rotation import activate_new_signer, prepare_new_signer

app = typer.Typer(help="The alliance hashing key: receive, distribute, rotate.", no_args_is_help=True)


@app.command("sync")
def key_sync(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Receive keys sent to this bank, generate an epoch's key it must make, forward keys to members lacking them."""
    node = node_context(ctx)
    with _skips_not_logged(debug=ctx.find_root().obj.debug):
        result = key_distribution.sync_keys(node)
    if json_output:
        console.print_json(result.to_json())
        return
    _describe(result)


@app.command("rotate")
def key_rotate(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Start a new key epoch, generate its key and send it to every member; then republish active reports."""
    node = node_context(ctx)
    epoch = key_distribution.rotate(node)
    if json_output:
        console.print_json({"epoch": epoch})
        return
    console.success(f"started key epoch {epoch} and sent its key to the active members")
    console.info("republish this bank's active reports under the new epoch: `alliance ledger republish`")


@app.command("status")
def key_status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Epochs held here and where each key came from; active members still lacking an envelope."""
    status = key_distribution.key_status(node_context(ctx))
    if json_output:
        console.print_json(status.to_json())
        return
    console.info(f"member {status.member_id}, chain key epoch {status.chain_epoch}")
    console.table("Keys held", ["epoch", "source", "since"],
                  [(k.epoch, k.source, k.created_at.isoformat(timespec="seconds")) for k in status.held])
    for epoch, member_ids in status.lacking.items():
        if member_ids:
            console.info(f"epoch {epoch}: no envelope yet for member(s) {', '.join(map(str, member_ids))}")


@app.command("new-signer")
def key_new_signer(ctx: typer.Context) -> None:
    """Make the bank's next signing key (after a compromise, or for hygiene) beside the current one, which keeps
    signing; other members then vote this bank's signer to its address (`member propose rotate`)."""
    node = node_context(ctx)
    prepared = prepare_new_signer(node)
    console.success(f"new signing key {prepared.address} in {prepared.path}")
    console.info(f"another member proposes `alliance member propose rotate {node.settings.bank_code or 'BANK'} "
                 f"--new-account {prepared.address}` and the members vote; then run `alliance key activate-signer` "
                 "(a running node then signs with the new key by itself)")


@app.command("activate-signer")
def key_activate_signer(ctx: typer.Context) -> None:
    """Sign with the key `new-signer` made, once the chain has its address as this bank's signer; the old key is
    kept as keys/signing-key.retired-<address>.json. A running node signs with the new key from its next signed write
    or worker pass, without a restart."""
    activated = activate_new_signer(node_context(ctx))
    console.success(f"member {activated.member_id} now signs as {activated.new_address} (was "
                    f"{activated.old_address}, kept as {activated.retired_path})")
    console.info("a running node (`alliance node start`) signs with the new key from its next signed write or worker "
                 "pass, no restart needed (`alliance node status` says if the new key does not open there)")


@app.command("replace-encryption-key")
def key_replace_encryption_key(ctx: typer.Context) -> None:
    """Replace the bank's X25519 key (after a suspected compromise, or for hygiene), or finish a replacement cut
    short: data at rest sealed again under it, the old key file kept aside, the new public key sent to the chain.
    Stop the node first."""
    replaced = replace_encryption_key(node_context(ctx))
    if replaced.old_public_key is None:
        console.success(f"sent the encryption key {replaced.public_key.hex()} to the chain (replaced earlier)")
    else:
        console.success(f"replaced the encryption key {replaced.old_public_key.hex()} by {replaced.public_key.hex()}"
                        f" ({replaced.resealed} sealed value(s) sealed again) and sent it to the chain")
    if replaced.retired_path is not None:
        console.info(f"the old key is kept as {replaced.retired_path}: it opens only store backups made before now; "
                     "delete it once none is kept")
    console.info("the members' nodes send this bank the alliance keys again, sealed to the new key; start the node")


@contextmanager
def _skips_not_logged(*, debug: bool) -> Iterator[None]:
    """Without the pass's warning of each envelope it skipped: `key sync` prints one line for each (`_describe`, or
    in `--json`), and the warning, meant for a running node's log, said it a second time on stderr."""
    if debug:
        yield
        return
    log = logging.getLogger(key_distribution.__name__)

    def not_a_skip(record: logging.LogRecord) -> bool:
        return not getattr(record, key_distribution.SKIPPED_ENVELOPE, False)

    log.addFilter(not_a_skip)
    try:
        yield
    finally:
        log.removeFilter(not_a_skip)


def _describe(result: KeySyncResult) -> None:
    console.success(f"member {result.member_id}: received {_epochs(result.received)}, "
                    f"generated {_epochs(result.generated)}, published {len(result.published)} envelope(s)")
    for sender, epoch, block, reason in result.rejected:
        console.info(f"skipped an envelope for epoch {epoch} from member {sender} (block {block}): "
                     f"{_SKIP_REASONS[reason]}")
    if result.missing and result.not_sent_because is not None:
        # "Still waiting" would promise keys that no member's node sends to this bank.
        console.info(f"lacking the key of epoch(s) {_epochs(result.missing)}: no member sends keys to this bank while "
                     f"it is {_NOT_SENT[result.not_sent_because]}")
    elif result.missing:
        console.info(f"still waiting for the key of epoch(s) {_epochs(result.missing)}")


_SKIP_REASONS = {key_distribution.DOES_NOT_OPEN: "it does not open",
                 key_distribution.UNTRUSTED_SENDER: "its sender does not hold that epoch's key as far as the chain "
                                                    "shows, so it was not opened"}
_NOT_SENT = {"suspended": "suspended (reinstated, it receives them)", "removed": "removed",
             "observer": "an observer (observers do not check identifiers)"}


def _epochs(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if epochs else "none"
