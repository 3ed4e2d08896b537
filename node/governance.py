"""Consortium membership as the CLI and API see it: validated input, then the registry contract.

Input is checked here before anything is signed, so a malformed address or an unknown member is a
clear error and never a transaction; what only the chain can know (quorum, another bank's double
vote) comes back as the contract's custom error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from itertools import takewhile

from node.chain.client import Receipt
from node.chain.errors import (
    AllianceRegistryAccountInUse,
    AllianceRegistryAlreadyVoted,
    AllianceRegistryBankCodeInUse,
    AllianceRegistryInvalidMemberStatus,
    AllianceRegistryProposalAlreadyExecuted,
    ChainError,
)
from node.chain.registry import (
    Member,
    MemberRole,
    MemberStatus,
    Proposal,
    ProposalKind,
    ProposalOutcome,
    RegistryClient,
)
from node.crypto.envelopes import is_usable_public_key
from node.errors import InvalidInput, NotFound
from node.setup import validate_bank_identity
from node.text import excerpt, quoted

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_KEY = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_MEMBER_ID_DIGITS = 78  # member ids are uint256 on chain


class ProposalAction(StrEnum):
    admit = "admit"
    suspend = "suspend"
    reinstate = "reinstate"
    remove = "remove"
    rotate = "rotate"


def parse_address(text: str, *, what: str = "address") -> str:
    value = text.strip()
    if not _ADDRESS.match(value):
        raise InvalidInput(f"{what} {quoted(text)} is not a 0x-prefixed 20-byte hex address", code="invalid_address")
    if value == "0x" + "0" * 40:
        raise InvalidInput(f"{what} may not be the zero address", code="invalid_address")
    return value


def parse_encryption_key(text: str) -> bytes:
    if not _KEY.match(text.strip()):
        raise InvalidInput(f"encryption key {quoted(text)} is not a 0x-prefixed 32-byte hex X25519 public key",
                           code="invalid_encryption_key")
    key = bytes.fromhex(text.strip()[2:])
    if not is_usable_public_key(key):
        # No envelope can ever be sealed for it, so the member would never get the alliance key; and its address and
        # bank code, once admitted, can never be admitted again.
        raise InvalidInput(f"encryption key {text!r} is not a usable X25519 public key (a low-order point, such as "
                           "all zeros): use the key `alliance init` printed", code="invalid_encryption_key")
    return key


def parse_role(text: str) -> MemberRole:
    try:
        role = MemberRole[text.strip().lower()]
    except KeyError:
        role = MemberRole.none
    if role == MemberRole.none:
        raise InvalidInput(f"role {text!r} must be one of member, auditor, observer", code="invalid_role")
    return role


def find_member(registry: RegistryClient, reference: str) -> Member:
    """A member by id ("3"), signing address or bank code."""
    reference = reference.strip()
    # ASCII digits only: str.isdigit() admits "²", which int() refuses; and int() refuses over 4,300 digits.
    if reference.isascii() and reference.isdigit():
        return _member_by_number(registry, reference)
    if reference.startswith("0x"):
        member_id = registry.member_id_of(parse_address(reference))
        if member_id == 0:
            raise NotFound(f"no member with signing address {reference}", code="unknown_member")
        return registry.member(member_id)
    by_code = _member_with_bank_code(registry, reference)
    if by_code is None:
        raise NotFound(f"no member with id, address or bank code {quoted(reference)}", code="unknown_member")
    return by_code


def _member_by_number(registry: RegistryClient, reference: str) -> Member:
    """A member whose id or bank code is `reference`, all digits: bank codes may be (CNAPS codes are)."""
    member_id = int(reference) if len(reference) <= MAX_MEMBER_ID_DIGITS else 0
    by_id = registry.member(member_id) if 1 <= member_id <= registry.member_count() else None
    by_code = _member_with_bank_code(registry, reference)
    if by_id is not None and by_code is not None and by_id.member_id != by_code.member_id:
        # A proposal must never target one member when the operator meant the other.
        raise InvalidInput(f"{reference} is the id of member {by_id.member_id} ({by_id.bank_code}) and the bank code "
                           f"of member {by_code.member_id}: give the signing address instead", code="ambiguous_member")
    found = by_id or by_code
    if found is None:
        raise NotFound(f"no member with id or bank code {excerpt(reference)}", code="unknown_member")
    return found


def _member_with_bank_code(registry: RegistryClient, bank_code: str) -> Member | None:
    return next((m for m in registry.members() if m.bank_code == bank_code.upper()), None)


@dataclass(frozen=True)
class ProposalView:
    """A proposal with the votes that count now: the contract counts only voters that are active Members at each
    count, so a raw tally that includes members suspended since can look like a quorum that is not there."""

    proposal: Proposal
    counted_votes: int
    required_votes: int
    state: str  # executed | expired | ready (enough votes, a target it still applies to: `member execute`) | open

    def to_json(self) -> dict[str, object]:
        return {**self.proposal.to_json(), "counted_votes": self.counted_votes, "required_votes": self.required_votes,
                "state": self.state}


def proposal_views(registry: RegistryClient, chain_time: int) -> list[ProposalView]:
    """Every proposal with its counted votes and state at `chain_time` (the head block's timestamp, which the
    contract's expiry is measured in)."""
    return _views(registry, registry.proposals(), chain_time)


def _views(registry: RegistryClient, proposals: list[Proposal], chain_time: int) -> list[ProposalView]:
    if not proposals:
        return []
    members = registry.members()
    status = {m.member_id: m.status for m in members}
    voters = [m.account for m in members if m.role == MemberRole.member and m.status == MemberStatus.active]
    required = registry.required_votes()
    voted = iter(registry.votes_cast([(p.proposal_id, account) for p in proposals for account in voters]))
    views = []
    for p in proposals:
        counted = sum(next(voted) for _ in voters)
        # The contract checks the target again when it executes: a suspension of a member removed meanwhile has the
        # votes and is refused all the same, so it is not `ready` (it stays open until it expires).
        executable = p.kind == ProposalKind.admit or status.get(p.member_id) in _TARGET_STATUSES[p.kind]
        state = ("executed" if p.executed else "expired" if chain_time > p.expires_at
                 else "ready" if counted >= required and executable else "open")
        views.append(ProposalView(p, counted, required, state))
    return views


def _answered(registry: RegistryClient, proposal: Proposal, receipt: Receipt) -> ProposalOutcome:
    """The proposal answered with a transaction of this bank sent before (this command run again): executed, or what
    it awaits now, which may have changed since (`ready`: it has the votes, and `member execute` is what it needs)."""
    if proposal.executed:
        return ProposalOutcome(proposal.proposal_id, True, receipt)
    view = _views(registry, [proposal], registry.chain.head().timestamp)[0]
    return ProposalOutcome(proposal.proposal_id, False, receipt, waiting=view.state)


# The statuses a proposal's target must have for it to execute (AllianceRegistry._allowsStatus).
_TARGET_STATUSES = {
    ProposalKind.suspend: {MemberStatus.active},
    ProposalKind.reinstate: {MemberStatus.suspended},
    ProposalKind.remove: {MemberStatus.active, MemberStatus.suspended},
    ProposalKind.rotate_signer: {MemberStatus.active, MemberStatus.suspended},
}


def find_proposal(registry: RegistryClient, proposal_id: int) -> Proposal:
    if not 1 <= proposal_id <= registry.proposal_count():
        raise NotFound(f"no proposal {proposal_id}", code="unknown_proposal")
    return registry.proposal(proposal_id)


@dataclass(frozen=True)
class AdmissionRequest:
    account: str
    role: MemberRole
    name: str
    bank_code: str
    encryption_key: bytes


def admission_request(*, account: str, role: str, name: str, bank_code: str,
                      encryption_key: str) -> AdmissionRequest:
    address = parse_address(account, what="account")
    clean_role = parse_role(role)
    clean_name, clean_code = validate_bank_identity(name, bank_code)
    return AdmissionRequest(address, clean_role, clean_name, clean_code, parse_encryption_key(encryption_key))


# Run again after its answer was lost (a crash, a client's retry), a governance write first waits for the
# transactions its signer sent before to be mined, then looks on chain for what it would do, holding the signer's
# lock from the look to the receipt (`one_writer`) so that another process of this node doing it at the same moment
# finds it too: sent again, a proposal was proposed twice (the banks' votes split between the two, and the second to
# reach its quorum is refused as a change that no longer applies, reverting the vote that reached it), and a vote or
# an execute was refused (AlreadyVoted, ProposalAlreadyExecuted) as if it had not happened.


def propose(registry: RegistryClient, action: ProposalAction, *, target: str | None = None,
            admission: AdmissionRequest | None = None, new_account: str | None = None) -> ProposalOutcome:
    """Propose a membership change, or, if the very same change is open already (this proposal run again after its
    answer was lost, or another bank's), answer that proposal with this bank's vote in it, cast once."""
    draft, send = _proposal_to_send(registry, action, target=target, admission=admission, new_account=new_account)
    with registry.chain.one_writer():
        registry.chain.wait_for_sent()
        same = _open_proposal_like(registry, draft)
        if same is None:
            return _send_unless_made(registry, draft, send)
        earlier = registry.vote_receipt(same, _signer_account(registry))
        if earlier is None:
            return registry.vote(same.proposal_id)
        return _answered(registry, same, earlier)


def _proposal_to_send(registry: RegistryClient, action: ProposalAction, *, target: str | None,
                      admission: AdmissionRequest | None,
                      new_account: str | None) -> tuple[Proposal, Callable[[], ProposalOutcome]]:
    """The proposal as the contract would store it (its id, proposer and times left zero), and its send."""
    if action == ProposalAction.admit:
        if admission is None:
            raise InvalidInput("an admission needs account, role, name, bank code and encryption key",
                               code="missing_field")
        a = admission
        return (_draft(ProposalKind.admit, 0, a.account, a.role, a.encryption_key, a.name, a.bank_code),
                lambda: registry.propose_admission(a.account, a.role, a.name, a.bank_code, a.encryption_key))
    if target is None:
        raise InvalidInput(f"a {action} proposal needs the target member", code="missing_field")
    member = find_member(registry, target)
    if action == ProposalAction.suspend:
        return (_draft(ProposalKind.suspend, member.member_id, member.account),
                lambda: registry.propose_suspension(member.member_id))
    if action == ProposalAction.reinstate:
        return (_draft(ProposalKind.reinstate, member.member_id, member.account),
                lambda: registry.propose_reinstatement(member.member_id))
    if action == ProposalAction.remove:
        return (_draft(ProposalKind.remove, member.member_id, member.account),
                lambda: registry.propose_removal(member.member_id))
    if new_account is None:
        raise InvalidInput("a rotation needs the new signing address", code="missing_field")
    account = parse_address(new_account, what="new account")
    return (_draft(ProposalKind.rotate_signer, member.member_id, account),
            lambda: registry.propose_signer_rotation(member.member_id, account))


def _draft(kind: ProposalKind, member_id: int, account: str, role: MemberRole = MemberRole.none,
           encryption_key: bytes = bytes(32), name: str = "", bank_code: str = "") -> Proposal:
    return Proposal(0, kind, member_id, account, role, encryption_key, "", 0, 0, 0, False, name, bank_code)


def _open_proposal_like(registry: RegistryClient, draft: Proposal) -> Proposal | None:
    """The oldest proposal neither executed nor expired that would make the change `draft` makes.

    Read from the newest back, and only until the first expired one: a proposal expires a fixed lifetime after the
    block that made it, so the ids of the unexpired ones are the newest few, and years of proposals cost no more
    reads than a week's.
    """
    now = registry.chain.head().timestamp
    unexpired = list(takewhile(lambda p: now <= p.expires_at, registry.proposals_newest_first()))
    return next((p for p in reversed(unexpired) if not p.executed and _same_change(p, draft)), None)


# The contract's refusals of a proposal whose change is made already: its target has the status it would give it
# (suspended, reinstated, removed), its new account or its newcomer's bank code and account are in use.
_MADE_ALREADY = (AllianceRegistryInvalidMemberStatus, AllianceRegistryAccountInUse, AllianceRegistryBankCodeInUse)


def _send_unless_made(registry: RegistryClient, draft: Proposal,
                      send: Callable[[], ProposalOutcome]) -> ProposalOutcome:
    """`send()`; refused as made already, the proposal of this bank's vote that made it (one that executed at once,
    its quorum one vote, run again after its answer was lost), else the refusal."""
    try:
        return send()
    except _MADE_ALREADY:
        registry.chain.wait_for_sent()  # a process signing for this bank without this lock may have sent it since
        made = _executed_proposal_like(registry, draft)
        voted = None if made is None else registry.vote_receipt(made, _signer_account(registry))
        if made is None or voted is None:
            raise
        return ProposalOutcome(made.proposal_id, True, voted)


def _executed_proposal_like(registry: RegistryClient, draft: Proposal) -> Proposal | None:
    """The executed proposal that made the change `draft` makes and whose change still holds: the admission of its
    account (admitted once ever), or the latest change executed on its target member if it is this one (a change
    since, a reinstatement after a suspension, makes it an earlier one that a new proposal would not repeat).

    The contract records both as proposals execute (`admissionOf`, `lastChangeOf`), the latest change in the order
    changes executed: the highest id is not the latest change when a vote that came late executed an older proposal.
    Two calls, however long the chain and the target's history.
    """
    made_by = (registry.admission_of(draft.account) if draft.kind == ProposalKind.admit
               else registry.last_change_on(draft.member_id))
    latest = None if made_by is None else registry.proposal(made_by)
    return latest if latest is not None and _same_change(latest, draft) else None


def _same_change(p: Proposal, draft: Proposal) -> bool:
    """Whether `p` makes the change `draft` makes."""
    return _change(p) == _change(draft)


def _change(p: Proposal) -> tuple[object, ...]:
    """What a proposal changes. An admission: its newcomer (whose member id is set only when it executes). A signer
    rotation: its member and the account it moves it to. A suspension, reinstatement or removal: its member alone; the
    account stored with it is the member's signer when it was proposed, which a rotation since has replaced (matched
    on it, that proposal run again was proposed a second time, and the banks' votes split between the two)."""
    if p.kind == ProposalKind.admit:
        return p.kind, p.account.lower(), p.role, p.encryption_key, p.name, p.bank_code
    if p.kind == ProposalKind.rotate_signer:
        return p.kind, p.member_id, p.account.lower()
    return p.kind, p.member_id


def vote(registry: RegistryClient, proposal_id: int) -> ProposalOutcome:
    """Vote for a proposal; run again after its answer was lost, the vote this bank cast (by proposing it, too)."""
    find_proposal(registry, proposal_id)
    return registry.chain.send_once(lambda: _voted_earlier(registry, proposal_id),
                                    lambda: registry.vote(proposal_id), refused_as_done=(AllianceRegistryAlreadyVoted,))


def _voted_earlier(registry: RegistryClient, proposal_id: int) -> ProposalOutcome | None:
    proposal = registry.proposal(proposal_id)
    earlier = registry.vote_receipt(proposal, _signer_account(registry))
    if earlier is None:
        return None
    return _answered(registry, proposal, earlier)


def execute(registry: RegistryClient, proposal_id: int) -> ProposalOutcome:
    """Execute a proposal whose votes pass it now although no vote did: the active count dropped since its last
    vote (a suspension or removal), and its voters cannot vote again. Executed already by a transaction of this bank
    (this execute run again after its answer was lost), that transaction; by another bank's, the contract's refusal."""
    find_proposal(registry, proposal_id)
    return registry.chain.send_once(lambda: _executed_earlier(registry, proposal_id),
                                    lambda: registry.execute(proposal_id),
                                    refused_as_done=(AllianceRegistryProposalAlreadyExecuted,))


def _executed_earlier(registry: RegistryClient, proposal_id: int) -> ProposalOutcome | None:
    receipt = registry.execution_receipt(registry.proposal(proposal_id), _signer_account(registry))
    return None if receipt is None else ProposalOutcome(proposal_id, True, receipt)


def _signer_account(registry: RegistryClient) -> str:
    if registry.chain.signer is None:
        raise ChainError("this operation needs the bank's signing key, and none was loaded")
    return registry.chain.signer.address


def besu_accounts_allowlist(registry: RegistryClient) -> str:
    """Besu's accounts permissioning file (`accounts_allowlist.toml`, chain_config/consortium/besu.toml): the signing
    addresses of the active members, of every role, as `activeAccounts()` holds them (suspended and removed members,
    and addresses rotated away from, are not in it). Lowercase, sorted, so two banks exporting at one block write
    the same bytes."""
    accounts = sorted(account.lower() for account in registry.active_accounts())
    listed = ", ".join(f'"{account}"' for account in accounts)
    return (f"# Accounts allowed to send transactions: the active members of AllianceRegistry {registry.address}.\n"
            f"# Written by `alliance chain allowlist`; export it again after every membership change.\n"
            f"accounts-allowlist=[{listed}]\n")

