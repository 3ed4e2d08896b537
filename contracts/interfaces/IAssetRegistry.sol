// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IAllianceRegistry} from "./IAllianceRegistry.sol";

/// @title IAssetRegistry
/// @notice On-chain anchor of ABS loan pools: each pool version is the Merkle root (OpenZeppelin StandardMerkleTree)
/// of its loan tape, so an auditor can check a loan's provenance against the chain alone.
/// @dev Actors are identified by member id in the AllianceRegistry, looked up from the caller's current signing
/// address, so a signer rotation keeps pool custody. Loan ids are not stored: they are published in
/// `LoanIdsPublished` events, the first chunk by `anchorVersion` and the rest by `publishLoanIds`, so a version of
/// a million loans fits in blocks of ordinary gas limits; double financing is detected by the nodes' mirrors of
/// those events. Only a count of published ids is stored per version. While the pool's latest version has fewer
/// ids published than its loan count, the pool takes no new version and no custody hand-over: a mirror never sees
/// two half-published versions of one pool, and the custodian that anchored a version is the one that completes it.
interface IAssetRegistry {
    // ------------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A loan pool.
    /// @param originatorMemberId Member that registered the pool.
    /// @param custodianMemberId Member currently holding the pool; the only one that anchors and reports on it.
    /// @param pendingCustodianMemberId Member a custody transfer was proposed to, or 0 if none is pending.
    /// @param metadataHash Hash of the pool's off-chain metadata document.
    /// @param versionCount Number of versions anchored (versions run from 1 to this value).
    /// @param lastServicingPeriod Last servicing period reported, or 0 if none.
    /// @param registeredAt Timestamp of registration.
    struct Pool {
        uint256 originatorMemberId;
        uint256 custodianMemberId;
        uint256 pendingCustodianMemberId;
        bytes32 metadataHash;
        uint32 versionCount;
        uint32 lastServicingPeriod;
        uint64 registeredAt;
    }

    /// @notice The succession vote of a pool whose custodian was removed from the alliance.
    /// @param successorMemberId Member proposed as the pool's new custodian, or 0 if no vote is open.
    /// @param round Number of the latest proposal for the pool (1, 2, ...); a new proposal replaces an open one.
    struct Succession {
        uint256 successorMemberId;
        uint64 round;
    }

    /// @notice How far the statuses of a pool's latest servicing period are published.
    /// @param period The pool's latest servicing period (0 if none).
    /// @param published Bytes of its statuses published so far (the offset of the next chunk).
    /// @param length Bytes its statuses take: (loanCount + 1) / 2 of the version reported.
    struct StatusesProgress {
        uint32 period;
        uint32 published;
        uint32 length;
    }

    /// @notice An anchored version of a pool's loan tape.
    /// @param root Merkle root (StandardMerkleTree, double-hashed leaves) of the loans.
    /// @param loanCount Number of loans (leaves) in the tree.
    /// @param totalPrincipal Sum of the loans' principal, in the pool's minor currency unit.
    /// @param anchoredAt Timestamp of anchoring.
    /// @param anchoredByMemberId Member (the custodian at the time) that anchored the version.
    struct PoolVersion {
        bytes32 root;
        uint32 loanCount;
        uint128 totalPrincipal;
        uint64 anchoredAt;
        uint256 anchoredByMemberId;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A pool was registered.
    /// @param poolId Id of the new pool.
    /// @param originatorMemberId Member that registered it (and its first custodian).
    /// @param metadataHash Hash of the pool's off-chain metadata document.
    event PoolRegistered(uint256 indexed poolId, uint256 indexed originatorMemberId, bytes32 metadataHash);

    /// @notice A new version of a pool was anchored.
    /// @param poolId Id of the pool.
    /// @param version Number of the new version.
    /// @param root Merkle root of the loans.
    /// @param loanCount Number of loans.
    /// @param totalPrincipal Sum of the loans' principal.
    event VersionAnchored(
        uint256 indexed poolId, uint32 indexed version, bytes32 root, uint32 loanCount, uint128 totalPrincipal
    );

    /// @notice A chunk of the loan ids of an anchored version, for the nodes' double-financing checks.
    /// @dev A version's chunks arrive in order, each starting where the previous one ended; the version's ids are
    /// complete when `offset + loanIds.length` reaches its loan count. `anchorVersion` always emits the first
    /// chunk (offset 0, possibly empty).
    /// @param poolId Id of the pool.
    /// @param version Number of the version.
    /// @param offset Position in the version of the chunk's first id (the number of ids published before it).
    /// @param loanIds Ids of the chunk's loans, in the version's order (the custodian's tape order).
    event LoanIdsPublished(uint256 indexed poolId, uint32 indexed version, uint32 offset, bytes32[] loanIds);

    /// @notice The custodian proposed to hand the pool over to another member.
    /// @param poolId Id of the pool.
    /// @param fromMemberId Current custodian.
    /// @param toMemberId Proposed custodian.
    event CustodyTransferProposed(uint256 indexed poolId, uint256 indexed fromMemberId, uint256 indexed toMemberId);

    /// @notice The custodian withdrew a pending custody transfer.
    /// @param poolId Id of the pool.
    /// @param fromMemberId Custodian (unchanged).
    /// @param toMemberId Member the transfer had been proposed to.
    event CustodyTransferCancelled(uint256 indexed poolId, uint256 indexed fromMemberId, uint256 indexed toMemberId);

    /// @notice The proposed custodian accepted the pool.
    /// @param poolId Id of the pool.
    /// @param fromMemberId Previous custodian.
    /// @param toMemberId New custodian.
    event CustodyTransferred(uint256 indexed poolId, uint256 indexed fromMemberId, uint256 indexed toMemberId);

    /// @notice A member proposed a successor for a pool whose custodian was removed from the alliance.
    /// @param poolId Id of the pool.
    /// @param round Number of the proposal (the vote it opens).
    /// @param successorMemberId Member proposed as the new custodian.
    /// @param proposerMemberId Member that proposed it (its vote is counted).
    event SuccessorProposed(
        uint256 indexed poolId, uint64 indexed round, uint256 indexed successorMemberId, uint256 proposerMemberId
    );

    /// @notice A member voted for the proposed successor of a pool.
    /// @param poolId Id of the pool.
    /// @param round Number of the proposal voted for.
    /// @param voterMemberId Member that voted.
    event SuccessorVoted(uint256 indexed poolId, uint64 indexed round, uint256 indexed voterMemberId);

    /// @notice Custody of a pool whose custodian was removed passed, by vote, to the proposed successor.
    /// @param poolId Id of the pool.
    /// @param fromMemberId The removed custodian.
    /// @param toMemberId The new custodian.
    event CustodySucceeded(uint256 indexed poolId, uint256 indexed fromMemberId, uint256 indexed toMemberId);

    /// @notice The custodian reported the servicing status of a pool version for a period.
    /// @param poolId Id of the pool.
    /// @param version Version the report refers to.
    /// @param period Reporting period (strictly increasing per pool).
    /// @param statusRoot Merkle root of the per-loan statuses.
    /// @param statusCounts Loans per status: current, dpd30, dpd60, dpd90, defaulted, repaid, repurchased.
    event ServicingReported(
        uint256 indexed poolId, uint32 indexed version, uint32 indexed period, bytes32 statusRoot, uint32[7] statusCounts
    );

    /// @notice A chunk of the per-loan statuses behind a servicing report, so that anyone rebuilds its status root
    /// from the chain alone (with the version's `LoanIdsPublished` ids): no period's statuses depend on the node that
    /// sent it. The first chunk comes with the report, the rest from `publishStatuses`, in order.
    /// @param poolId Id of the pool.
    /// @param period Reporting period.
    /// @param offset Position of the chunk's first byte in the period's statuses.
    /// @param statuses Status codes (1 current ... 7 repurchased) of the version's loans in version order, 4 bits
    /// each, two a byte, the earlier loan in the high half; an odd count leaves the last low half 0.
    event LoanStatusesReported(uint256 indexed poolId, uint32 indexed period, uint32 offset, bytes statuses);

    /// @notice An auditor attested a pool version.
    /// @param poolId Id of the pool.
    /// @param version Version attested.
    /// @param auditorMemberId Member id of the auditor.
    /// @param reportHash Hash of the audit report.
    event AuditorAttested(
        uint256 indexed poolId, uint32 indexed version, uint256 indexed auditorMemberId, bytes32 reportHash
    );

    // ------------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------------

    /// @notice The caller is not an active member with role `Member`.
    /// @param account The caller.
    error AssetRegistryNotMember(address account);

    /// @notice The caller is not an active member with role `Auditor`.
    /// @param account The caller.
    error AssetRegistryNotAuditor(address account);

    /// @notice The caller is not the pool's current custodian, or its member is no longer an active `Member`.
    /// @param poolId Id of the pool.
    /// @param account The caller.
    error AssetRegistryNotCustodian(uint256 poolId, address account);

    /// @notice The caller is not the member a pending custody transfer was proposed to, or it is no longer active.
    /// @param poolId Id of the pool.
    /// @param account The caller.
    error AssetRegistryNotPendingCustodian(uint256 poolId, address account);

    /// @notice No custody transfer is pending on the pool.
    /// @param poolId Id of the pool.
    error AssetRegistryNoPendingTransfer(uint256 poolId);

    /// @notice The proposed custodian is not an active `Member`, or is already the custodian.
    /// @param account The proposed account.
    error AssetRegistryInvalidCustodian(address account);

    /// @notice No pool has this id.
    /// @param poolId The id asked for.
    error AssetRegistryUnknownPool(uint256 poolId);

    /// @notice The pool has no such version.
    /// @param poolId Id of the pool.
    /// @param version The version asked for.
    error AssetRegistryUnknownVersion(uint256 poolId, uint32 version);

    /// @notice A Merkle root must not be zero.
    error AssetRegistryZeroRoot();

    /// @notice The root is the pool's latest version's: the same tape anchored again (say, resent after a crash).
    /// @param poolId Id of the pool.
    /// @param version The latest version, which already has this root.
    error AssetRegistryRootUnchanged(uint256 poolId, uint32 version);

    /// @notice The chunk would publish more loan ids than the version's loan count.
    /// @param poolId Id of the pool.
    /// @param version Number of the version.
    /// @param given Number of loan ids in the chunk.
    /// @param remaining Number of the version's ids still unpublished.
    error AssetRegistryTooManyLoanIds(uint256 poolId, uint32 version, uint256 given, uint256 remaining);

    /// @notice The chunk does not start where the version's published ids end (a chunk resent, or one skipped).
    /// @param poolId Id of the pool.
    /// @param version Number of the version.
    /// @param offset Offset the chunk was sent for.
    /// @param published Number of the version's ids already published (the expected offset).
    error AssetRegistryLoanIdsOffsetMismatch(uint256 poolId, uint32 version, uint32 offset, uint32 published);

    /// @notice The pool's latest version still has loan ids to publish, so it takes no new version or custodian.
    /// @param poolId Id of the pool.
    /// @param version The incomplete version.
    /// @param published Number of its ids published.
    /// @param loanCount Its loan count.
    error AssetRegistryLoanIdsIncomplete(uint256 poolId, uint32 version, uint32 published, uint32 loanCount);

    /// @notice The caller's member already registered a pool with this metadata hash (a registration resent after
    /// a crash while its first copy was pending, or sent by a second process of the bank).
    /// @param poolId The pool the member registered with this hash.
    error AssetRegistryPoolAlreadyRegistered(uint256 poolId);

    /// @notice A successor may be proposed or voted for only while the pool's custodian is removed from the alliance.
    /// @param poolId Id of the pool.
    /// @param custodianMemberId The pool's custodian.
    error AssetRegistryCustodianNotRemoved(uint256 poolId, uint256 custodianMemberId);

    /// @notice No succession vote of this round is open for the pool (never proposed, replaced, or decided).
    /// @param poolId Id of the pool.
    /// @param round The round given.
    error AssetRegistryNoSuccession(uint256 poolId, uint64 round);

    /// @notice The member voted in this succession round already.
    /// @param poolId Id of the pool.
    /// @param round The round.
    /// @param memberId The voter.
    error AssetRegistryAlreadyVotedSuccessor(uint256 poolId, uint64 round, uint256 memberId);

    /// @notice A servicing period must be greater than the pool's last reported one.
    /// @param period The period given.
    /// @param last The last period reported (0 if none).
    error AssetRegistryPeriodNotIncreasing(uint32 period, uint32 last);

    /// @notice A chunk of statuses must not run past the 4 bits a loan that the reported version's loans take.
    /// @param poolId Id of the pool.
    /// @param period Period reported.
    /// @param given Bytes of statuses in the chunk.
    /// @param remaining Bytes of the period's statuses not yet published.
    error AssetRegistryTooManyStatuses(uint256 poolId, uint32 period, uint256 given, uint256 remaining);

    /// @notice A chunk of statuses must start where the published ones end, for the pool's latest period.
    /// @param poolId Id of the pool.
    /// @param period Period given.
    /// @param offset Offset given.
    /// @param latestPeriod The pool's latest servicing period, the only one that takes statuses.
    /// @param published Bytes of that period's statuses published so far.
    error AssetRegistryStatusesOffsetMismatch(
        uint256 poolId, uint32 period, uint32 offset, uint32 latestPeriod, uint32 published
    );

    // ------------------------------------------------------------------------------------------------------------
    // Pools and versions
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Registers a new pool, with the caller's member as originator and first custodian.
    /// @dev Caller must be an active `Member`. A member registers each metadata hash once: a second registration
    /// reverts with `AssetRegistryPoolAlreadyRegistered`, naming the first pool.
    /// @param metadataHash Hash of the pool's off-chain metadata document (unique per originating member).
    /// @return poolId Id of the new pool (ids run from 1).
    function registerPool(bytes32 metadataHash) external returns (uint256 poolId);

    /// @notice Anchors a new version of a pool's loan tape and publishes the first chunk of its loan ids.
    /// @dev Caller must be the pool's custodian (an active `Member`), the pool's previous version must have all
    /// its ids published, and its root must differ from `root`. The remaining ids follow through `publishLoanIds`.
    /// @param poolId Id of the pool.
    /// @param root Merkle root of the loans (non-zero).
    /// @param loanCount Number of loans in the tree.
    /// @param totalPrincipal Sum of the loans' principal.
    /// @param loanIds The first ids of the loans, in tree order; at most `loanCount`, possibly none. Emitted, not
    /// stored.
    /// @return version Number of the new version (1, 2, 3, ... per pool).
    function anchorVersion(
        uint256 poolId,
        bytes32 root,
        uint32 loanCount,
        uint128 totalPrincipal,
        bytes32[] calldata loanIds
    ) external returns (uint32 version);

    /// @notice Publishes the next chunk of an anchored version's loan ids.
    /// @dev Caller must be the pool's custodian. `offset` must equal `loanIdsPublished(poolId, version)`, so a
    /// chunk resent after a crash (its first copy already mined) is refused instead of publishing ids twice.
    /// @param poolId Id of the pool.
    /// @param version An anchored version of the pool.
    /// @param offset Position in the version of the chunk's first id.
    /// @param loanIds The chunk's ids, in tree order; at most the number still unpublished. Emitted, not stored.
    function publishLoanIds(uint256 poolId, uint32 version, uint32 offset, bytes32[] calldata loanIds) external;

    // ------------------------------------------------------------------------------------------------------------
    // Custody
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Proposes to hand the pool over to another member; replaces any pending proposal.
    /// @dev Caller must be the pool's custodian. Custody moves only when the recipient accepts.
    /// @param poolId Id of the pool.
    /// @param to Current signing address of the recipient (an active `Member`, not the custodian).
    function proposeTransfer(uint256 poolId, address to) external;

    /// @notice Accepts a pending custody transfer; the caller's member becomes the custodian.
    /// @dev Caller must belong to the pending recipient member, which must still be an active `Member`, and the
    /// pool's latest version must have all its loan ids published.
    /// @param poolId Id of the pool.
    function acceptTransfer(uint256 poolId) external;

    /// @notice Withdraws the pending custody transfer.
    /// @dev Caller must be the pool's custodian.
    /// @param poolId Id of the pool.
    function cancelTransfer(uint256 poolId) external;

    /// @notice Proposes a successor custodian for a pool whose custodian was removed from the alliance (the pool could
    /// otherwise never be anchored, reported on or handed over again); opens a new vote round, replacing an open one.
    /// @dev Caller must be an active `Member`; its vote is counted. Custody passes (`CustodySucceeded`) once the
    /// votes of members still active reach the AllianceRegistry's `requiredVotes()`. Any pending transfer is dropped.
    /// @param poolId Id of the pool.
    /// @param successor Current signing address of the proposed custodian (an active `Member`).
    /// @return round Number of the new vote round.
    function proposeSuccessor(uint256 poolId, address successor) external returns (uint64 round);

    /// @notice Votes for the successor proposed in `round`; the vote that reaches the quorum passes custody.
    /// @dev Caller must be an active `Member` that has not voted in this round.
    /// @param poolId Id of the pool.
    /// @param round The open round (from `SuccessorProposed` or `succession`).
    function voteSuccessor(uint256 poolId, uint64 round) external;

    // ------------------------------------------------------------------------------------------------------------
    // Servicing and audit
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Reports the servicing status of a pool version for a period.
    /// @dev Caller must be the pool's custodian. Periods are strictly increasing per pool. The version's loan ids
    /// must all be published (`AssetRegistryLoanIdsIncomplete` otherwise), so that its statuses can be matched to
    /// them. The counts, root and statuses are recorded as given (not checked against each other, which would cost
    /// a loop over the loans); the nodes and the auditor's verifier reconcile them.
    /// @param poolId Id of the pool.
    /// @param version An anchored version of the pool.
    /// @param period Reporting period, greater than the pool's last one.
    /// @param statusRoot Merkle root of the per-loan statuses.
    /// @param statusCounts Loans per status: current, dpd30, dpd60, dpd90, defaulted, repaid, repurchased.
    /// @param statuses The first chunk of every loan's status code, 4 bits each in version order (see
    /// `LoanStatusesReported`): all of them, or as many as fit a transaction, the rest following by
    /// `publishStatuses`.
    function reportServicing(
        uint256 poolId,
        uint32 version,
        uint32 period,
        bytes32 statusRoot,
        uint32[7] calldata statusCounts,
        bytes calldata statuses
    ) external;

    /// @notice Publishes the next chunk of the statuses of the pool's latest servicing period.
    /// @dev Caller must be the pool's custodian. `offset` must equal the published bytes of that period
    /// (`statusesProgress`), so a chunk resent after a crash is refused instead of published twice. A period whose
    /// statuses were left incomplete when the next one was reported stays so: the nodes and the verifier see it.
    /// @param poolId Id of the pool.
    /// @param period The pool's latest servicing period.
    /// @param offset Position of the chunk's first byte in the period's statuses.
    /// @param statuses The chunk; at most the bytes still unpublished. Emitted, not stored.
    function publishStatuses(uint256 poolId, uint32 period, uint32 offset, bytes calldata statuses) external;

    /// @notice Records an auditor's attestation of a pool version.
    /// @dev Caller must be an active member with role `Auditor`.
    /// @param poolId Id of the pool.
    /// @param version An anchored version of the pool.
    /// @param reportHash Hash of the audit report.
    function attest(uint256 poolId, uint32 version, bytes32 reportHash) external;

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @notice The membership registry this contract takes members and roles from.
    /// @return registryAddress The AllianceRegistry.
    function registry() external view returns (IAllianceRegistry registryAddress);

    /// @notice Number of pools registered (ids run from 1 to this value).
    /// @return count The number of pools.
    function poolCount() external view returns (uint256 count);

    /// @notice A registered pool.
    /// @param poolId Id of the pool (1..poolCount()).
    /// @return info The pool.
    function pool(uint256 poolId) external view returns (Pool memory info);

    /// @notice The pool a member registered with a metadata hash.
    /// @param originatorMemberId Member that registered the pool.
    /// @param metadataHash Hash of the pool's off-chain metadata document.
    /// @return poolId Id of the pool, or 0 if the member registered none with this hash.
    function poolIdOf(uint256 originatorMemberId, bytes32 metadataHash) external view returns (uint256 poolId);

    /// @notice The pool's succession vote, and the votes for it of members still active.
    /// @param poolId Id of the pool.
    /// @return info The latest round and its proposed successor (0 if no vote is open).
    /// @return votes Votes of the open round that count now.
    function succession(uint256 poolId) external view returns (Succession memory info, uint256 votes);

    /// @notice An anchored version of a pool.
    /// @param poolId Id of the pool.
    /// @param version Number of the version (1..versionCount).
    /// @return info The version.
    function version(uint256 poolId, uint32 version) external view returns (PoolVersion memory info);

    /// @notice Number of an anchored version's loan ids published so far; all are when it equals its loan count.
    /// @dev Reverts with `AssetRegistryUnknownPool` or `AssetRegistryUnknownVersion` for a version never anchored.
    /// @param poolId Id of the pool.
    /// @param version Number of the version.
    /// @return count Ids published (the offset of the next chunk).
    function loanIdsPublished(uint256 poolId, uint32 version) external view returns (uint32 count);

    /// @notice How far the statuses of the pool's latest servicing period are published.
    /// @dev Reverts with `AssetRegistryUnknownPool` for a pool never registered.
    /// @param poolId Id of the pool.
    /// @return progress The latest period, the bytes of its statuses published and the bytes they take.
    function statusesProgress(uint256 poolId) external view returns (StatusesProgress memory progress);

    /// @notice Whether a loan leaf belongs to an anchored pool version.
    /// @dev Reverts with `AssetRegistryUnknownPool` or `AssetRegistryUnknownVersion` if the version was never
    /// anchored, so `false` always means "anchored, but this leaf and proof do not match its root".
    /// @param poolId Id of the pool.
    /// @param version Number of the version.
    /// @param leaf Standard (double-hashed) leaf of the loan, computed off chain.
    /// @param proof Merkle proof of the leaf.
    /// @return valid True if the proof links the leaf to the version's root.
    function verifyLoan(uint256 poolId, uint32 version, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool valid);
}
