"""The auditor's verification of a provenance bundle, trusting nothing but a chain endpoint.

No database, data dir or node configuration is involved: the checks read the AssetRegistry (and the
AllianceRegistry it names) over JSON-RPC. In order:

1. `bundle`: the file is a well-formed bundle of this format, with the standard leaf encoding;
2. `chain`: the endpoint is the bundle's chain, and the registry address holds the AssetRegistry;
3. `record`: the record hashes to the bundle's leaf (any edited field changes it);
4. `proof`: the proof leads from that leaf to the bundle's root;
5. `anchor`: that root is the one anchored on chain for the pool version, the contract's own
   `verifyLoan` agrees, and the anchoring entry (block, transaction) is the chain's;
   `loan_ids`: the version's loan ids were all published (the contract's `loanIdsPublished` equals its
   loan count, and the LoanIdsPublished chunks follow each other up to that count) and the loan's id is
   among them, so every bank's double-financing check could see it;
   `double_financing`: as of `as_of_block`, the loan's id is not active in two pools at once (the rule of every
   bank's loan-id mirror: active in a pool's latest complete version, or in the one after it still being published);
6. `versions`: the pool's versions were anchored as 1, 2, 3, ... in chain order, each by the custodian
   of the moment whose signer was then an active member;
7. `custody`: the bundle's custody chain is the chain's, every hand-over was proposed by the holder and
   accepted by the recipient's signer while an active member;
8. `servicing`: reports came from the custodian of the moment, periods strictly increasing, each about a
   version already anchored, and the bundle lists exactly the chain's reports;
   `loan_statuses`: each status the bundle claims for the loan is proven against its period's status root, and
   it claims one for every period whose report's version holds the loan (by that version's published ids): a
   period left out fails the bundle, named in the detail and in the facts with the status the report's own
   statuses on chain give, since the period left out may be the one where the loan defaulted;
9. `attestations`: each came from a signer that was then an active auditor, as listed in the bundle.

History is compared as of the bundle's `as_of_block`; later events are reported, not held against it. The facts
say who holds the pool now and which version is the pool's latest (as of that block and now): a bundle of a
version that a later one superseded still proves the loan was in its version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from node.assets.history import (
    BUNDLE_FORMAT,
    ChainStatuses,
    LoanIdsGap,
    PoolHistory,
    VersionLoanIds,
    hex32,
    pool_history,
    pools_holding_loan,
    read_version_loan_ids,
)
from node.assets.records import HASH32, LEAF_ENCODING, STATUS_ENCODING, LoanRecord, LoanStatus
from node.chain.asset_registry import AssetRegistryClient, PoolEvent, PoolInfo, PublishedLoanIds, VersionInfo
from node.chain.client import ChainClient
from node.chain.errors import ChainDataMissing, ChainError, ChainUnavailable, MalformedChainAnswer, redacted_url
from node.chain.registry import MemberRole, MemberStatus
from node.config import is_http_url
from node.errors import InvalidInput
from node.merkle import MerkleTreeError, standard_leaf_hash, verify_proof

_BUNDLE_KEYS = {"format", "chain_id", "registry", "pool_id", "version", "record", "leaf_encoding", "leaf",
                "proof", "root", "anchor", "custody", "servicing", "loan_statuses", "attestations", "as_of_block"}
# Every verdict's facts have these keys (None where the checks did not get far enough to know), so that a script
# reading `--json` finds the same schema whatever the outcome.
FACT_KEYS = ("loan_id", "pool_id", "version", "registry", "as_of_block", "chain_head",
             "custodian_member_id_as_of_block", "custodian_member_id_now", "latest_version_as_of_block",
             "latest_version_now", "pools_holding_loan_now", "loan_status_periods", "loan_status_periods_missing")
# The widths the chain gives these numbers (uint256 pool ids, uint32 versions): anything wider cannot be looked up.
_INTEGER_BOUNDS = {"chain_id": 2**256, "pool_id": 2**256, "version": 2**32, "as_of_block": 2**64}
# How long the endpoint may take over one request before the verification ends with "did not answer in time".
REQUEST_TIMEOUT_S = 10.0
# The endpoint cannot give what a check asks (unreachable, slow, without a transaction or a past block's state, or
# answering in another shape than a node's): no verdict on the bundle can be reached through it, so these end the
# verification (one line, exit code 1) instead of failing a check as if the bundle were wrong.
ENDPOINT_FAILURES = (ChainUnavailable, ChainDataMissing, MalformedChainAnswer)


class BundleInvalid(ValueError):
    """The bundle is not a well-formed provenance bundle."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(FACT_KEYS))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"verified": self.ok, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
                "facts": self.facts}


class _Failed(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def verify_bundle(bundle: Any, rpc_url: str, registry_address: str, *,
                  request_timeout: float = REQUEST_TIMEOUT_S) -> Verdict:
    """Check `bundle` (parsed JSON) against the chain at `rpc_url`; never raises for a bad bundle. An endpoint that
    cannot answer what the checks ask raises one of ENDPOINT_FAILURES: the bundle was not judged."""
    return verify_bundles([bundle], rpc_url, registry_address, request_timeout=request_timeout)[0]


def verify_bundles(bundles: Sequence[Any], rpc_url: str, registry_address: str, *,
                   request_timeout: float = REQUEST_TIMEOUT_S) -> list[Verdict]:
    """Check each of `bundles` as `verify_bundle` does, in one run: what the chain answers is read once for all of
    them, at one chain head (an audit sample of a pool asks the same things for every loan: every published loan id,
    the version's ids, the pool's history, the signers' roles). Each bundle gets its own verdict.

    An `rpc_url` nothing can be sent to is refused (InvalidInput) before any bundle is judged: a typo in it was the
    verdict NOT VERIFIED ("chain refused the lookup"), which says the evidence failed, of evidence never checked."""
    if not is_http_url(rpc_url):
        raise InvalidInput(f"chain RPC URL {redacted_url(rpc_url)!r} is not an http(s) URL with a host, e.g. "
                           "http://127.0.0.1:8545; nothing was verified", code="invalid_rpc_url")
    reads = _ReadsOnce(ChainClient(rpc_url, request_timeout=request_timeout), registry_address)
    roles = _RoleBook(reads)
    return [_verify(bundle, reads, roles) for bundle in bundles]


def _verify(bundle: Any, registry: _ReadsOnce, roles: _RoleBook) -> Verdict:
    verdict = Verdict()

    def run(name: str, check: Callable[[], str]) -> bool:
        try:
            verdict.checks.append(Check(name, True, check()))
            return True
        except _Failed as failed:
            verdict.checks.append(Check(name, False, failed.detail))
        except ENDPOINT_FAILURES:
            raise
        except ChainError as exc:
            verdict.checks.append(Check(name, False, f"chain refused the lookup: {exc}"))
        return False

    parsed: dict[str, Any] = {}
    if not run("bundle", lambda: _parse(bundle, parsed)):
        return verdict
    if not run("chain", lambda: _check_chain(registry, parsed)):
        return verdict
    record: LoanRecord = parsed["record"]
    verdict.facts.update(loan_id=hex32(record.loan_id), pool_id=parsed["pool_id"], version=parsed["version"],
                         registry=registry.address, as_of_block=parsed["as_of_block"], chain_head=parsed["chain_head"])
    run("record", lambda: _check_record(parsed))
    run("proof", lambda: _check_proof(parsed))
    events = registry.pool_events(parsed["pool_id"], to_block=parsed["as_of_block"])
    history = pool_history(events)
    run("anchor", lambda: _check_anchor(registry, parsed, history))
    run("loan_ids", lambda: _check_loan_ids(registry, parsed, history))
    run("double_financing", lambda: _check_double_financing(registry, parsed, verdict.facts))
    run("versions", lambda: _check_versions(events, roles))
    run("custody", lambda: _check_custody(events, history, parsed, roles))
    run("servicing", lambda: _check_servicing(events, history, parsed, roles))
    run("loan_statuses", lambda: _check_loan_statuses(registry, parsed, history, verdict.facts))
    run("attestations", lambda: _check_attestations(events, history, parsed, roles))
    if history.custody:
        now = registry.pool(parsed["pool_id"])
        verdict.facts["custodian_member_id_as_of_block"] = history.custody[-1]["to_member_id"]
        verdict.facts["custodian_member_id_now"] = now.custodian_member_id
        # A bundle proves the loan was in its version; whether a later version (which may leave the loan out)
        # superseded it is a fact the auditor needs beside the proof, not a reason to fail it.
        verdict.facts["latest_version_as_of_block"] = max((v["version"] for v in history.versions), default=0)
        verdict.facts["latest_version_now"] = now.version_count
    return verdict


class _ReadsOnce(AssetRegistryClient):
    """The AssetRegistry as one verification run reads it: each read made once, whichever bundle asks, and one chain
    head for the run. Within a run the answers cannot differ, and for an audit sample of a million-loan pool they
    are most of the cost (every published loan id: some 3 s, per bundle)."""

    def __init__(self, chain: ChainClient, address: str) -> None:
        super().__init__(chain, address)
        self._answers: dict[tuple[Any, ...], Any] = {}

    def _once(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        if key not in self._answers:  # a read that raised is not kept: the next bundle asks again
            self._answers[key] = read()
        return self._answers[key]

    def head(self) -> int:
        return int(self._once(("head",), self.chain.block_number))

    def has_code(self, address: str) -> bool:
        return bool(self._once(("code", address), lambda: self.chain.has_code(address)))

    def registry_address(self) -> str:
        return str(self._once(("registry",), super().registry_address))

    def pool_count(self) -> int:
        return int(self._once(("pools",), super().pool_count))

    def pool(self, pool_id: int) -> PoolInfo:
        read = super().pool
        return cast(PoolInfo, self._once(("pool", pool_id), lambda: read(pool_id)))

    def version(self, pool_id: int, version: int) -> VersionInfo:
        read = super().version
        return cast(VersionInfo, self._once(("version", pool_id, version), lambda: read(pool_id, version)))

    def pool_events(self, pool_id: int, *, to_block: int | str = "latest", after: tuple[int, int] | None = None,
                    limit: int | None = None) -> list[PoolEvent]:
        read = super().pool_events
        return cast(list[PoolEvent], self._once(("events", pool_id, to_block, after, limit),
                                                lambda: read(pool_id, to_block=to_block, after=after, limit=limit)))

    def published_loan_ids(self, *, from_block: int = 0, to_block: int | str = "latest",
                           pool_id: int | None = None, version: int | None = None) -> list[PublishedLoanIds]:
        read = super().published_loan_ids
        return cast(list[PublishedLoanIds], self._once(
            ("loan_ids", from_block, to_block, pool_id, version),
            lambda: read(from_block=from_block, to_block=to_block, pool_id=pool_id, version=version)))

    def version_ids(self, pool_id: int, version: int, to_block: int) -> VersionLoanIds:
        """The version's published ids up to `to_block` (LoanIdsGap if its chunks do not follow each other), read
        from its anchoring block: one read for the loan-id check and the status trees (it was one each, a million
        ids some 250 transactions' logs twice). The block is the first anchoring of the version among the pool's
        events up to `to_block` (the history the checks compare), 0 if there is none."""
        def read() -> VersionLoanIds:
            anchored = next((e.block_number for e in self.pool_events(pool_id, to_block=to_block)
                             if e.kind == "anchored" and e.args["version"] == version), 0)
            return read_version_loan_ids(self, pool_id, version, from_block=anchored, to_block=to_block)
        # A gap raises and is not kept, but its chunks are (published_loan_ids): asking again reads nothing more.
        return cast(VersionLoanIds, self._once(("version_ids", pool_id, version, to_block), read))

    def chain_statuses(self, pool_id: int, to_block: int) -> ChainStatuses:
        return cast(ChainStatuses, self._once(("statuses", pool_id, to_block), lambda: ChainStatuses(
            self, pool_id, to_block, read_ids=lambda version: self.version_ids(pool_id, version, to_block))))


# -- parsing ---------------------------------------------------------------------------------------------------
def _parse(bundle: Any, parsed: dict[str, Any]) -> str:
    if not isinstance(bundle, dict):
        raise _Failed("the bundle is not a JSON object")
    if bundle.get("format") != BUNDLE_FORMAT:
        raise _Failed(f"format is {bundle.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    if set(bundle) != _BUNDLE_KEYS:
        raise _Failed(f"fields differ: missing {sorted(_BUNDLE_KEYS - set(bundle))}, "
                      f"unexpected {sorted(set(bundle) - _BUNDLE_KEYS)}")
    if bundle["leaf_encoding"] != list(LEAF_ENCODING):
        raise _Failed(f"leaf_encoding is not the standard loan encoding {list(LEAF_ENCODING)}")
    try:
        parsed["record"] = LoanRecord.from_json(bundle["record"])
        parsed["record"].leaf()  # every value fits its field of the leaf encoding (MerkleTreeError otherwise)
    except ValueError as exc:
        raise _Failed(f"malformed record: {exc}") from None
    for name, bound in _INTEGER_BOUNDS.items():
        value = bundle[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < bound:
            raise _Failed(f"{name} must be a positive integer below 2**{bound.bit_length() - 1}")
        parsed[name] = value
    parsed["leaf"] = _hash32(bundle["leaf"], "leaf")
    parsed["root"] = _hash32(bundle["root"], "root")
    if not isinstance(bundle["proof"], list):
        raise _Failed("proof must be a list of 0x-hex hashes")
    parsed["proof"] = [_hash32(node, f"proof[{i}]") for i, node in enumerate(bundle["proof"])]
    for name in ("anchor",):
        if not isinstance(bundle[name], dict):
            raise _Failed(f"{name} must be an object")
    for name in ("custody", "servicing", "loan_statuses", "attestations"):
        if not isinstance(bundle[name], list) or not all(isinstance(e, dict) for e in bundle[name]):
            raise _Failed(f"{name} must be a list of objects")
    parsed.update(anchor=bundle["anchor"], custody=bundle["custody"], servicing=bundle["servicing"],
                  loan_statuses=bundle["loan_statuses"], attestations=bundle["attestations"],
                  registry=bundle["registry"])
    return f"well-formed bundle of loan {bundle['record'].get('loan_id')}"


def _hash32(value: Any, where: str) -> bytes:
    # Matched in full, not left to bytes.fromhex: it skips whitespace, so "0x" + 62 digits + two spaces was taken as
    # a 31-byte hash that the contract call's ABI encoder then refused with a traceback.
    if not (isinstance(value, str) and HASH32.fullmatch(value)):
        raise _Failed(f"{where} must be 0x + 64 hex digits")
    return bytes.fromhex(value[2:])


# -- checks ----------------------------------------------------------------------------------------------------
def _check_chain(registry: _ReadsOnce, parsed: dict[str, Any]) -> str:
    try:
        return _check_endpoint(registry, parsed)
    except MalformedChainAnswer as exc:
        # JSON-RPC in form, not an Ethereum node in content (a result of null, or "0xzz" for a number): the endpoint
        # is not the bundle's chain. Past this check, such an answer ends the verification (ENDPOINT_FAILURES).
        raise _Failed(f"the endpoint does not answer as an Ethereum JSON-RPC node: {exc}") from None


def _check_endpoint(registry: _ReadsOnce, parsed: dict[str, Any]) -> str:
    chain_id = registry.chain.chain_id
    if chain_id != parsed["chain_id"]:
        raise _Failed(f"the endpoint serves chain {chain_id}, the bundle is for chain {parsed['chain_id']}")
    if str(parsed["registry"]).lower() != registry.address.lower():
        raise _Failed(f"the bundle names registry {parsed['registry']}, verifying against {registry.address}")
    if not registry.has_code(registry.address):
        raise _Failed(f"no contract at {registry.address}")
    try:
        registry.pool_count()
        alliance = registry.registry_address()
    except ENDPOINT_FAILURES:
        raise
    except ChainError:
        raise _Failed(f"{registry.address} does not answer as an AssetRegistry") from None
    # A contract that answers every call with zeros passes the calls above; the AssetRegistry names the
    # AllianceRegistry whose members' roles the later checks read, which holds code.
    if not registry.has_code(alliance):
        raise _Failed(f"{registry.address} does not answer as an AssetRegistry: the AllianceRegistry it names "
                      f"({alliance}) holds no contract")
    head = registry.head()
    if parsed["as_of_block"] > head:
        raise _Failed(f"as_of_block {parsed['as_of_block']} is beyond the chain head {head}")
    parsed["chain_head"] = head
    return f"chain {chain_id}, AssetRegistry at {registry.address}, head {head}"


def _check_record(parsed: dict[str, Any]) -> str:
    leaf = parsed["record"].leaf()
    if leaf != parsed["leaf"]:
        raise _Failed(f"the record hashes to leaf {hex32(leaf)}, not the bundle's {hex32(parsed['leaf'])}: "
                      "the record was altered")
    return f"record hashes to leaf {hex32(leaf)}"


def _check_proof(parsed: dict[str, Any]) -> str:
    try:
        linked = verify_proof(parsed["root"], parsed["leaf"], parsed["proof"])
    except MerkleTreeError as exc:
        raise _Failed(f"malformed proof: {exc}") from None
    if not linked:
        raise _Failed("the proof does not lead from the leaf to the bundle's root: the proof or root was altered")
    return f"proof of {len(parsed['proof'])} nodes leads to root {hex32(parsed['root'])}"


def _check_anchor(registry: AssetRegistryClient, parsed: dict[str, Any], history: PoolHistory) -> str:
    pool_id, version = parsed["pool_id"], parsed["version"]
    entry = next((v for v in history.versions if v["version"] == version), None)
    if entry is None:
        raise _Failed(f"pool {pool_id} had no version {version} anchored by block {parsed['as_of_block']}")
    if entry["root"] != hex32(parsed["root"]):
        raise _Failed(f"version {version} of pool {pool_id} is anchored with root {entry['root']}, not the "
                      f"bundle's {hex32(parsed['root'])}: wrong version or altered root")
    on_chain = registry.version(pool_id, version)
    if on_chain.root != parsed["root"]:
        raise _Failed(f"the registry's version {version} has root {hex32(on_chain.root)}")
    if not registry.verify_loan(pool_id, version, parsed["leaf"], parsed["proof"]):
        raise _Failed("the contract's verifyLoan rejects the leaf and proof")
    claimed = parsed["anchor"]
    if not _same(claimed, {"block_number": entry["block_number"], "tx_hash": entry["tx_hash"]}):
        raise _Failed(f"the bundle's anchor {claimed} is not the chain's (block {entry['block_number']}, "
                      f"tx {entry['tx_hash']})")
    return (f"root anchored as version {version} of pool {pool_id} in block {entry['block_number']}; "
            "verifyLoan on chain agrees")


def _check_loan_ids(registry: _ReadsOnce, parsed: dict[str, Any], history: PoolHistory) -> str:
    pool_id, version, as_of = parsed["pool_id"], parsed["version"], parsed["as_of_block"]
    entry = next((v for v in history.versions if v["version"] == version), None)
    if entry is None:
        raise _Failed(f"pool {pool_id} had no version {version} anchored by block {as_of}")
    loan_count = entry["loan_count"]
    published = registry.loan_ids_published(pool_id, version, at_block=as_of)
    if published != loan_count:
        raise _Failed(f"by block {as_of} only {published:,} of the {loan_count:,} loan ids of version {version} "
                      "were published: the other banks' double-financing checks could not see the rest")
    try:
        # Read from entry["block_number"], the one read the status trees of loan_statuses use too.
        published_ids = registry.version_ids(pool_id, version, as_of)
    except LoanIdsGap as gap:
        raise _Failed(f"the loan id chunks of version {version} do not follow each other: {gap}") from None
    if len(published_ids.ids) != loan_count:
        raise _Failed(f"the LoanIdsPublished events of version {version} carry {len(published_ids.ids):,} ids, "
                      f"not its {loan_count:,} loans")
    if parsed["record"].loan_id not in published_ids.id_set:
        raise _Failed(f"the loan's id is not among the {loan_count:,} ids published for version {version}: "
                      "it was hidden from the other banks' double-financing checks")
    return (f"all {loan_count:,} loan ids of version {version} published in {published_ids.chunks} chunk(s), "
            "the loan's among them")


def _check_double_financing(registry: AssetRegistryClient, parsed: dict[str, Any], facts: dict[str, Any]) -> str:
    """The loan not active in two pools at once as of the bundle's block: a genuine proof of a loan pledged to two
    pools would otherwise verify. Ids of one key epoch only, as the chain shows them (see docs/assets.md). The pools
    holding it at the chain head go in `facts`: a loan pledged again after an older bundle's block does not fail
    that bundle, but the auditor must hear of it."""
    loan_id, as_of = parsed["record"].loan_id, parsed["as_of_block"]
    counts: dict[tuple[int, int], int] = {}

    def loan_count(pool_id: int, version: int) -> int:
        if (pool_id, version) not in counts:
            counts[(pool_id, version)] = registry.version(pool_id, version).loan_count
        return counts[(pool_id, version)]

    chunks = registry.published_loan_ids(to_block=parsed["chain_head"])
    facts["pools_holding_loan_now"] = pools_holding_loan(chunks, loan_id, loan_count)
    pools = pools_holding_loan([c for c in chunks if c.block_number <= as_of], loan_id, loan_count)
    if len(pools) > 1:
        raise _Failed(f"by block {as_of} the loan's id is active in pools {', '.join(map(str, pools))} at once: "
                      "it is financed twice")
    return f"the loan's id is active in no two pools at once by block {as_of}"


class _RoleBook:
    """Member id, role and status of signers at given blocks, read from the AllianceRegistry (cached)."""

    def __init__(self, registry: AssetRegistryClient) -> None:
        self._registry = registry
        self._cache: dict[tuple[str, int], tuple[int, int, int]] = {}

    def require(self, event: PoolEvent, member_id: int, role: MemberRole, what: str) -> None:
        # The contract checked the signer at its transaction, somewhere inside block N; archive state exists only at
        # block ends. On a chain of several transactions a block (Besu QBFT), an admission, reinstatement or signer
        # rotation earlier in block N shows only at the end of N, a suspension or removal later in block N only at
        # the end of N-1. The contract enforced the state in between, so the signer passes if either end shows it as
        # the member and role, active; a failure reports the state before the block.
        before = self._state(event.sender, event.block_number - 1)
        if self._fits(before, member_id, role) or self._fits(self._state(event.sender, event.block_number),
                                                              member_id, role):
            return
        actual_id, actual_role, status = before
        if actual_id != member_id:
            raise _Failed(f"{what} in block {event.block_number} was signed by {event.sender}, member "
                          f"{actual_id}, not member {member_id} (neither before nor after its block)")
        raise _Failed(f"{what} in block {event.block_number}: signer {event.sender} was not an active "
                      f"{role.name} then (role {MemberRole(actual_role).name}, status "
                      f"{MemberStatus(status).name}; neither before nor after its block)")

    def _state(self, sender: str, block_number: int) -> tuple[int, int, int]:
        key = (sender, block_number)
        if key not in self._cache:
            self._cache[key] = self._registry.member_at(sender, block_number)
        return self._cache[key]

    @staticmethod
    def _fits(state: tuple[int, int, int], member_id: int, role: MemberRole) -> bool:
        actual_id, actual_role, status = state
        return actual_id == member_id and actual_role == role and status == MemberStatus.active


def _custodians(events: Sequence[PoolEvent]) -> list[tuple[PoolEvent, int]]:
    """Each event with the pool's custodian just before it."""
    custodian, result = 0, []
    for e in events:
        result.append((e, custodian))
        if e.kind == "registered":
            custodian = e.args["originatorMemberId"]
        elif e.kind in ("transferred", "succeeded"):
            custodian = e.args["toMemberId"]
    return result


def _check_versions(events: Sequence[PoolEvent], roles: _RoleBook) -> str:
    expected = 1
    for e, custodian in _custodians(events):
        if e.kind != "anchored":
            continue
        if e.args["version"] != expected:
            raise _Failed(f"version {e.args['version']} was anchored in block {e.block_number} where version "
                          f"{expected} was due")
        roles.require(e, custodian, MemberRole.member, f"anchoring of version {expected}")
        expected += 1
    return f"versions 1..{expected - 1} anchored in order, each by the custodian of the moment"


def _check_custody(events: Sequence[PoolEvent], history: PoolHistory, parsed: dict[str, Any],
                   roles: _RoleBook) -> str:
    _compare("custody", parsed["custody"], history.custody, parsed["as_of_block"])
    proposed: set[tuple[int, int]] = set()
    for e, custodian in _custodians(events):
        if e.kind == "registered":
            roles.require(e, e.args["originatorMemberId"], MemberRole.member, "registration of the pool")
        elif e.kind == "transfer_proposed":
            roles.require(e, custodian, MemberRole.member, "the transfer proposal")
            proposed = {(e.args["fromMemberId"], e.args["toMemberId"])}
        elif e.kind == "transfer_cancelled":
            proposed = set()
        elif e.kind == "transferred":
            hand_over = (e.args["fromMemberId"], e.args["toMemberId"])
            if hand_over not in proposed or hand_over[0] != custodian:
                raise _Failed(f"custody moved {hand_over[0]} -> {hand_over[1]} in block {e.block_number} "
                              "without a pending proposal by the custodian")
            roles.require(e, hand_over[1], MemberRole.member, "acceptance of custody")
            proposed = set()
        elif e.kind == "successor_proposed":
            roles.require(e, e.args["proposerMemberId"], MemberRole.member, "the proposal of a successor")
        elif e.kind == "successor_voted":
            roles.require(e, e.args["voterMemberId"], MemberRole.member, "a vote for a successor")
        elif e.kind == "succeeded":  # the contract checked the custodian was removed and the quorum was met
            if e.args["fromMemberId"] != custodian:
                raise _Failed(f"custody passed by vote from member {e.args['fromMemberId']} in block "
                              f"{e.block_number}, which was not the custodian (member {custodian})")
            proposed = set()
    chain = " -> ".join(str(c["to_member_id"]) for c in history.custody)
    return (f"custody chain (member ids) {chain} matches the chain, each hand-over proposed and accepted (or voted "
            "after the custodian's removal)")


def _check_servicing(events: Sequence[PoolEvent], history: PoolHistory, parsed: dict[str, Any],
                     roles: _RoleBook) -> str:
    _compare("servicing", parsed["servicing"], history.servicing, parsed["as_of_block"])
    last_period, anchored = 0, 0
    for e, custodian in _custodians(events):
        if e.kind == "anchored":
            anchored = e.args["version"]
        elif e.kind == "servicing":
            period, version = e.args["period"], e.args["version"]
            if period <= last_period:
                raise _Failed(f"servicing period {period} in block {e.block_number} follows period {last_period}")
            if not 1 <= version <= anchored:
                raise _Failed(f"servicing period {period} reports on version {version}, not yet anchored")
            roles.require(e, custodian, MemberRole.member, f"servicing report of period {period}")
            last_period = period
    return f"{len(history.servicing)} servicing report(s), periods increasing, each by the custodian"


def _check_loan_statuses(registry: _ReadsOnce, parsed: dict[str, Any], history: PoolHistory,
                         facts: dict[str, Any]) -> str:
    """The loan's status in every servicing period whose report's version holds it, each proven against the status
    root the chain recorded: a bundle that leaves a period out fails, naming it (and the status the chain's own
    statuses of that report give), since a period left out may be the one where the loan defaulted."""
    proven = _proven_statuses(parsed, history)
    chain_statuses = registry.chain_statuses(parsed["pool_id"], parsed["as_of_block"])
    loan_id = parsed["record"].loan_id
    covering = [r for r in history.servicing if chain_statuses.holds(r["version"], loan_id)]
    missing = [{"period": r["period"], "version": r["version"], "status_on_chain": _status_on_chain(
                chain_statuses, r, loan_id)} for r in covering if r["period"] not in proven]
    facts["loan_status_periods"] = [r["period"] for r in covering]
    facts["loan_status_periods_missing"] = missing
    if missing:
        raise _Failed(f"the bundle gives no status of the loan for servicing period(s) {_missing_text(missing)}: "
                      f"the chain has {len(missing)} report(s) covering the loan that the bundle leaves out "
                      "(a default there would not show)")
    if not covering:
        return f"no servicing report by block {parsed['as_of_block']} covers the loan"
    listed = ", ".join(f"{period}: {name}" for period, name in sorted(proven.items()))
    return f"the loan's status proven for all {len(covering)} servicing period(s) covering it ({listed})"


def _status_on_chain(chain_statuses: ChainStatuses, report: dict[str, Any], loan_id: bytes) -> str | None:
    """The loan's status in a report according to the statuses the report carried on chain, if they rebuild its
    status root (None if not: the custodian's report is itself malformed)."""
    rebuilt = chain_statuses.tree(report)
    if rebuilt is None:
        return None
    loan_ids, tree = rebuilt
    return LoanStatus(tree.values[loan_ids.index(loan_id)][1]).name


def _missing_text(missing: list[dict[str, Any]]) -> str:
    def said(status: str | None) -> str:
        return f"say {status}" if status else "are incomplete or do not rebuild its root"

    return ", ".join(f"{m['period']} (version {m['version']}; the report's statuses on chain "
                     f"{said(m['status_on_chain'])})" for m in missing)


def _proven_statuses(parsed: dict[str, Any], history: PoolHistory) -> dict[int, str]:
    """Each claimed status of the loan, proven against the status root the chain recorded for its period."""
    roots = {entry["period"]: entry["status_root"] for entry in history.servicing}
    loan_id = parsed["record"].loan_id
    proven: dict[int, str] = {}
    for entry in parsed["loan_statuses"]:
        if set(entry) != {"period", "status", "proof"}:  # anything else would be shown as verified, unchecked
            raise _Failed(f"a loan status entry has fields {sorted(entry)}, not period, status and proof")
        period, name, proof = entry["period"], entry["status"], entry["proof"]
        if not isinstance(period, int) or isinstance(period, bool) or period not in roots:
            raise _Failed(f"the loan's status for period {period} refers to no servicing report on chain")
        if period in proven:
            raise _Failed(f"the bundle gives the loan's status for period {period} twice")
        try:
            status = LoanStatus[name]
            leaf = standard_leaf_hash(STATUS_ENCODING, (loan_id, int(status)))
            linked = verify_proof(_hash32(roots[period], "status root"), leaf,
                                  [_hash32(node, "status proof") for node in proof])
        except (KeyError, TypeError, MerkleTreeError):
            raise _Failed(f"malformed loan status for period {period}") from None
        if not linked:
            raise _Failed(f"the loan's status {name!r} for period {period} is not in that report's status root")
        proven[period] = name
    return proven


def _check_attestations(events: Sequence[PoolEvent], history: PoolHistory, parsed: dict[str, Any],
                        roles: _RoleBook) -> str:
    _compare("attestations", parsed["attestations"], history.attestations, parsed["as_of_block"])
    for e in events:
        if e.kind == "attested":
            roles.require(e, e.args["auditorMemberId"], MemberRole.auditor, "attestation")
    return f"{len(history.attestations)} attestation(s), each by an active auditor"


def _same(mine: Any, theirs: Any) -> bool:
    """Equal as JSON values, types included: Python's == takes `true` for 1 and `41.0` for 41, so a bundle whose
    numbers were rewritten as booleans or floats (which another reader of the bundle may take differently) passed."""
    if type(mine) is not type(theirs):
        return False
    if isinstance(mine, dict):
        return mine.keys() == theirs.keys() and all(_same(mine[k], theirs[k]) for k in mine)
    if isinstance(mine, list):
        return len(mine) == len(theirs) and all(_same(a, b) for a, b in zip(mine, theirs, strict=True))
    return bool(mine == theirs)


def _compare(what: str, claimed: list[dict[str, Any]], actual: list[dict[str, Any]], as_of_block: int) -> None:
    """`claimed` (the bundle's) equals `actual` (the chain's up to `as_of_block`), or _Failed."""
    for index, (mine, theirs) in enumerate(zip(claimed, actual, strict=False)):
        if not _same(mine, theirs):
            raise _Failed(f"{what} entry {index} differs from the chain: bundle {mine}, chain {theirs}")
    if len(claimed) != len(actual):
        # The bundle's block, which the history was read up to: the block of the chain's last entry said "by block 0"
        # of a pool with none, as if the chain had been read no further than its first block.
        raise _Failed(f"the bundle lists {len(claimed)} {what} entries, the chain has {len(actual)} "
                      f"by block {as_of_block}")
