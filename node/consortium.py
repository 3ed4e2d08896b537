"""Setting up a consortium: deploying the contracts with their founders, and the dev demo."""

from __future__ import annotations

import errno
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from node.chain.deployment import (
    Deployment,
    check_deployment,
    deploy_consortium,
    load_deployment,
    save_deployment,
)
from node.chain.errors import ContractNotDeployed
from node.chain.registry import FoundingMember, MemberRole
from node.config import DEV_PASSPHRASE, Network, load_settings
from node.crypto.envelopes import public_key_bytes
from node.errors import AllianceError, Conflict, InvalidInput
from node.governance import admission_request
from node.input_files import read_json_file
from node.private_files import write_private_text
from node.runtime import NodeContext
from node.setup import init_node, validate_bank_identity

logger = logging.getLogger(__name__)

_FOUNDER_FIELDS = frozenset({"account", "role", "name", "bank_code", "encryption_key"})
DEMO_BANKS = (("Demo Bank A", "DEMO-A"), ("Demo Bank B", "DEMO-B"), ("Demo Bank C", "DEMO-C"))


def this_bank_as_founder(node: NodeContext) -> FoundingMember:
    # Checked as init checks them: the settings may come from ALLIANCE_BANK_NAME/CODE or a hand-edited config, and
    # the chain keeps a founder's name and code for good (a lowercase code could never be found again).
    name, code = validate_bank_identity(node.settings.bank_name, node.settings.bank_code)
    return FoundingMember(node.address, MemberRole.member, name, code, public_key_bytes(node.encryption_key))


def parse_founders(path: Path) -> list[FoundingMember]:
    entries = read_json_file(path, "founders file")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"founders file {path} must hold a non-empty JSON list", code="malformed_file")
    founders = []
    for index, entry in enumerate(entries):
        founders.append(_founder(entry, f"{path} entry {index}"))
    return founders


def _founder(entry: Any, where: str) -> FoundingMember:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: must be an object", code="malformed_file")
    missing = _FOUNDER_FIELDS - {"role"} - entry.keys()
    if missing:
        raise InvalidInput(f"{where}: missing {', '.join(sorted(missing))}", code="malformed_file")
    # Strings only: str() made a null name "None" and a null bank code "NONE", founders the chain keeps for good.
    not_text = sorted(name for name in _FOUNDER_FIELDS & entry.keys() if not isinstance(entry[name], str))
    if not_text:
        raise InvalidInput(f"{where}: {', '.join(not_text)} must be a JSON string", code="malformed_file")
    try:
        request = admission_request(account=entry["account"], role=entry.get("role", "member"),
                                    name=entry["name"], bank_code=entry["bank_code"],
                                    encryption_key=entry["encryption_key"])
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}", code=exc.code) from exc
    return FoundingMember(request.account, request.role, request.name, request.bank_code, request.encryption_key)


def _refuse_live_deployment(node: NodeContext, force: bool) -> None:
    path = node.settings.effective_deployment_file
    if force or not path.exists():
        return
    try:
        check_deployment(node.chain, load_deployment(path))
    except ContractNotDeployed:
        return  # a stale record (e.g. a wiped dev chain) may be replaced
    raise Conflict(f"contracts are already deployed per {path}; pass --force to deploy a new consortium",
                   code="already_deployed")


def deploy(node: NodeContext, founders: list[FoundingMember], *, quorum_percent: int, proposal_lifetime_s: int,
           force: bool) -> Deployment:
    _refuse_live_deployment(node, force)
    record = node.settings.effective_deployment_file
    made = _refuse_unwritable_record(record)
    try:
        deployment = deploy_consortium(node.signing_chain, network=node.settings.network.value, founders=founders,
                                       quorum_percent=quorum_percent, proposal_lifetime_s=proposal_lifetime_s)
    except BaseException:
        _remove_empty(made)  # nothing was deployed that needs them: the data dir is left as the command found it
        raise
    try:
        save_deployment(deployment, record)
    except OSError as exc:  # the record's place changed since it was checked: the addresses must not be lost
        addresses = ", ".join(f"{name} {contract.address} (block {contract.block_number})"
                              for name, contract in deployment.contracts.items())
        raise AllianceError(f"deployed {addresses}, but the deployment record {record} cannot be written: "
                            f"{exc.strerror or exc}", code="deployment_record_unwritable") from exc
    return deployment


def _refuse_unwritable_record(path: Path) -> list[Path]:
    """Checked before anything is sent: contracts deployed without their record are lost to the node. The
    directories it made for the record, innermost first."""
    probe = path.with_suffix(".tmp")  # where save_deployment writes first
    made = [directory for directory in path.parents if not directory.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        probe.touch()
        probe.unlink()
    except OSError as exc:
        _remove_empty(made)
        # mkdir's FileExistsError: a file is where a directory of the path belongs
        reason = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise InvalidInput(f"cannot write the deployment record {path}: {reason}",
                           code="deployment_file_unwritable") from None
    return made


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:  # innermost first; one something else wrote into meanwhile stays
        try:
            directory.rmdir()
        except OSError:
            return


def deploy_solo(node: NodeContext, *, quorum_percent: int, proposal_lifetime_s: int, force: bool) -> Deployment:
    return deploy(node, [this_bank_as_founder(node)], quorum_percent=quorum_percent,
                  proposal_lifetime_s=proposal_lifetime_s, force=force)


def deploy_from_founders_file(node: NodeContext, path: Path, *, quorum_percent: int, proposal_lifetime_s: int,
                              force: bool) -> Deployment:
    return deploy(node, parse_founders(path), quorum_percent=quorum_percent,
                  proposal_lifetime_s=proposal_lifetime_s, force=force)


def ensure_demo_consortium(node: NodeContext) -> Deployment:
    """On the dev network: this bank and two demo banks, founders of a fresh deployment.

    The demo banks get data dirs of their own under `<data dir>/demo/`, so that their commands can be run too
    (`alliance --data-dir <data dir>/demo/demo-b ...`; not their nodes, which would start a second dev chain on the
    port of this one). Idempotent: an existing live deployment is kept.
    """
    if node.settings.network != Network.dev:
        raise InvalidInput("the demo consortium exists only on the dev network", code="not_dev_network")
    path = node.settings.effective_deployment_file
    if path.exists():
        try:
            deployment = load_deployment(path)
            check_deployment(node.chain, deployment)
            _name_record_in_demo_configs(node, path)
            return deployment
        except ContractNotDeployed as exc:
            logger.warning("the dev chain lacks the demo consortium of %s (%s): deploying it again; a chain "
                           "restored from an older state loses what came after it", path, exc)
    founders = [this_bank_as_founder(node)]
    for name, code in DEMO_BANKS[1:]:
        founders.append(this_bank_as_founder(_demo_bank(node, name, code)))
    return deploy(node, founders, quorum_percent=50, proposal_lifetime_s=7 * 24 * 3600, force=True)


def _name_record_in_demo_configs(node: NodeContext, record: Path) -> None:
    """Demo data dirs initialised before their config named the deployment record (see `_demo_bank`) get it now.

    One line is added: the config written again from loaded settings would also take whatever ALLIANCE_* this
    process has in its environment (bank A's database URL, say) into bank B's config."""
    for _, code in DEMO_BANKS[1:]:
        config = node.settings.data_dir / "demo" / code.lower() / "alliance.toml"
        try:
            text = config.read_text(encoding="utf-8")
            if "deployment_file" in tomllib.loads(text):
                continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # no such demo bank, or a config its own commands refuse, naming the problem
        line = f"deployment_file = {json.dumps(str(record.absolute()))}\n"  # a JSON string is a TOML one
        write_private_text(config, text + ("" if text.endswith("\n") else "\n") + line)


def _demo_bank(node: NodeContext, name: str, code: str) -> NodeContext:
    # Demo banks always use the dev passphrase, whatever this operator's own passphrase is. The deployment record is
    # this bank's, written into the demo bank's config by init (absolute: a command may run from anywhere): without it
    # every command of the demo bank's own (`alliance --data-dir .alliance/demo/demo-b ...`) looked for a record in
    # its data dir, found none and refused to run.
    overrides = {"network": Network.dev, "dev_chain_port": node.settings.dev_chain_port,
                 "deployment_file": node.settings.effective_deployment_file.absolute(),
                 "key_passphrase": DEV_PASSPHRASE}
    settings = load_settings(node.settings.data_dir / "demo" / code.lower(), **overrides)
    if not settings.signing_key_file.exists():
        init_node(settings, bank_name=name, bank_code=code, passphrase=DEV_PASSPHRASE)
    return NodeContext(load_settings(settings.data_dir, **overrides))
