// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IAllianceRegistry} from "./interfaces/IAllianceRegistry.sol";
import {IAssetRegistry} from "./interfaces/IAssetRegistry.sol";

/// @title AssetRegistry
/// @notice Anchors ABS loan pools as Merkle roots, tracks their custody, servicing reports and audit attestations.
/// @dev Every access check asks the AllianceRegistry for the caller's current member id and status, so custody
/// follows a member through signer rotations and stops working while the member is suspended or removed.
contract AssetRegistry is IAssetRegistry {
    IAllianceRegistry private immutable _registry;

    uint256 private _poolCount;
    mapping(uint256 poolId => Pool) private _pools;
    mapping(uint256 originatorMemberId => mapping(bytes32 metadataHash => uint256 poolId)) private _poolIds;
    mapping(uint256 poolId => mapping(uint32 versionNumber => PoolVersion)) private _versions;
    mapping(uint256 poolId => mapping(uint32 versionNumber => uint32 count)) private _loanIdsPublished;
    mapping(uint256 poolId => Succession) private _successions;
    mapping(uint256 poolId => StatusesProgress) private _statusesProgress;
    mapping(uint256 poolId => mapping(uint64 round => uint256[] memberIds)) private _successionVoters;

    /// @notice Binds the asset registry to the alliance's membership registry for its whole life.
    /// @param registry_ Address of the AllianceRegistry.
    constructor(IAllianceRegistry registry_) {
        _registry = registry_;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Pools and versions
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAssetRegistry
    function registerPool(bytes32 metadataHash) external returns (uint256 poolId) {
        uint256 memberId = _checkMember(msg.sender);
        return _registerPool(memberId, metadataHash);
    }

    /// @inheritdoc IAssetRegistry
    function anchorVersion(
        uint256 poolId,
        bytes32 root,
        uint32 loanCount,
        uint128 totalPrincipal,
        bytes32[] calldata loanIds
    ) external returns (uint32 versionNumber) {
        uint256 memberId = _checkCustodian(poolId, msg.sender);
        return _anchorVersion(poolId, memberId, root, loanCount, totalPrincipal, loanIds);
    }

    /// @inheritdoc IAssetRegistry
    function publishLoanIds(uint256 poolId, uint32 versionNumber, uint32 offset, bytes32[] calldata loanIds)
        external
    {
        _checkCustodian(poolId, msg.sender);
        _publishLoanIds(poolId, versionNumber, offset, loanIds);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Custody
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAssetRegistry
    function proposeTransfer(uint256 poolId, address to) external {
        uint256 fromMemberId = _checkCustodian(poolId, msg.sender);
        _proposeTransfer(poolId, fromMemberId, to);
    }

    /// @inheritdoc IAssetRegistry
    function acceptTransfer(uint256 poolId) external {
        uint256 toMemberId = _checkPendingCustodian(poolId, msg.sender);
        _acceptTransfer(poolId, toMemberId);
    }

    /// @inheritdoc IAssetRegistry
    function cancelTransfer(uint256 poolId) external {
        uint256 fromMemberId = _checkCustodian(poolId, msg.sender);
        _cancelTransfer(poolId, fromMemberId);
    }

    /// @inheritdoc IAssetRegistry
    function proposeSuccessor(uint256 poolId, address successor) external returns (uint64 round) {
        uint256 proposerMemberId = _checkMember(msg.sender);
        _checkCustodianRemoved(poolId);
        uint256 successorMemberId = _registry.memberIdOf(successor);
        if (successorMemberId == 0 || !_registry.isActiveMember(successor)) {
            revert AssetRegistryInvalidCustodian(successor);
        }
        Succession storage s = _successions[poolId];
        round = ++s.round;
        s.successorMemberId = successorMemberId;
        emit SuccessorProposed(poolId, round, successorMemberId, proposerMemberId);
        _voteSuccessor(poolId, round, proposerMemberId);
    }

    /// @inheritdoc IAssetRegistry
    function voteSuccessor(uint256 poolId, uint64 round) external {
        uint256 voterMemberId = _checkMember(msg.sender);
        _checkCustodianRemoved(poolId);
        Succession storage s = _successions[poolId];
        if (s.successorMemberId == 0 || s.round != round) revert AssetRegistryNoSuccession(poolId, round);
        _voteSuccessor(poolId, round, voterMemberId);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Servicing and audit
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAssetRegistry
    function reportServicing(
        uint256 poolId,
        uint32 versionNumber,
        uint32 period,
        bytes32 statusRoot,
        uint32[7] calldata statusCounts,
        bytes calldata statuses
    ) external {
        _checkCustodian(poolId, msg.sender);
        _reportServicing(poolId, versionNumber, period, statusRoot, statusCounts, statuses);
    }

    /// @inheritdoc IAssetRegistry
    function publishStatuses(uint256 poolId, uint32 period, uint32 offset, bytes calldata statuses) external {
        _checkCustodian(poolId, msg.sender);
        _publishStatuses(poolId, period, offset, statuses);
    }

    /// @inheritdoc IAssetRegistry
    function attest(uint256 poolId, uint32 versionNumber, bytes32 reportHash) external {
        uint256 auditorMemberId = _checkAuditor(msg.sender);
        _attest(poolId, versionNumber, auditorMemberId, reportHash);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAssetRegistry
    function registry() external view returns (IAllianceRegistry registryAddress) {
        return _registry;
    }

    /// @inheritdoc IAssetRegistry
    function poolCount() external view returns (uint256 count) {
        return _poolCount;
    }

    /// @inheritdoc IAssetRegistry
    function pool(uint256 poolId) external view returns (Pool memory info) {
        return _existingPool(poolId);
    }

    /// @inheritdoc IAssetRegistry
    function poolIdOf(uint256 originatorMemberId, bytes32 metadataHash) external view returns (uint256 poolId) {
        return _poolIds[originatorMemberId][metadataHash];
    }

    /// @inheritdoc IAssetRegistry
    function succession(uint256 poolId) external view returns (Succession memory info, uint256 votes) {
        _existingPool(poolId);
        info = _successions[poolId];
        if (info.successorMemberId != 0) votes = _countedSuccessionVotes(poolId, info.round);
    }

    /// @inheritdoc IAssetRegistry
    function version(uint256 poolId, uint32 versionNumber) external view returns (PoolVersion memory info) {
        return _existingVersion(poolId, versionNumber);
    }

    /// @inheritdoc IAssetRegistry
    function loanIdsPublished(uint256 poolId, uint32 versionNumber) external view returns (uint32 count) {
        _existingVersion(poolId, versionNumber);
        return _loanIdsPublished[poolId][versionNumber];
    }

    /// @inheritdoc IAssetRegistry
    function statusesProgress(uint256 poolId) external view returns (StatusesProgress memory progress) {
        _existingPool(poolId);
        return _statusesProgress[poolId];
    }

    /// @inheritdoc IAssetRegistry
    function verifyLoan(uint256 poolId, uint32 versionNumber, bytes32 leaf, bytes32[] calldata proof)
        external
        view
        returns (bool valid)
    {
        return MerkleProof.verifyCalldata(proof, _existingVersion(poolId, versionNumber).root, leaf);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Access checks
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Reverts unless `account` belongs to an active `Member`; returns that member's id.
    function _checkMember(address account) internal view returns (uint256 memberId) {
        if (!_registry.isActiveMember(account)) revert AssetRegistryNotMember(account);
        return _registry.memberIdOf(account);
    }

    /// @dev Reverts unless `account` belongs to an active `Auditor`; returns that member's id.
    function _checkAuditor(address account) internal view returns (uint256 memberId) {
        if (_registry.roleOf(account) != IAllianceRegistry.Role.Auditor) revert AssetRegistryNotAuditor(account);
        return _registry.memberIdOf(account);
    }

    /// @dev Reverts unless the pool exists and `account` belongs to its custodian, an active `Member`.
    function _checkCustodian(uint256 poolId, address account) internal view returns (uint256 memberId) {
        Pool storage p = _existingPool(poolId);
        memberId = _registry.memberIdOf(account);
        if (memberId == 0 || memberId != p.custodianMemberId || !_registry.isActiveMember(account)) {
            revert AssetRegistryNotCustodian(poolId, account);
        }
    }

    /// @dev Reverts unless the pool exists and its custodian has been removed from the alliance.
    function _checkCustodianRemoved(uint256 poolId) internal view {
        uint256 custodianMemberId = _existingPool(poolId).custodianMemberId;
        if (_registry.member(custodianMemberId).status != IAllianceRegistry.MemberStatus.Removed) {
            revert AssetRegistryCustodianNotRemoved(poolId, custodianMemberId);
        }
    }

    /// @dev Whether `memberId` is an active `Member` now (one whose vote counts).
    function _isActiveVotingMember(uint256 memberId) internal view returns (bool) {
        IAllianceRegistry.Member memory m = _registry.member(memberId);
        return m.status == IAllianceRegistry.MemberStatus.Active && m.role == IAllianceRegistry.Role.Member;
    }

    /// @dev Reverts unless the pool has a pending transfer to the member of `account`, still an active `Member`.
    function _checkPendingCustodian(uint256 poolId, address account) internal view returns (uint256 memberId) {
        Pool storage p = _existingPool(poolId);
        if (p.pendingCustodianMemberId == 0) revert AssetRegistryNoPendingTransfer(poolId);
        memberId = _registry.memberIdOf(account);
        if (memberId != p.pendingCustodianMemberId || !_registry.isActiveMember(account)) {
            revert AssetRegistryNotPendingCustodian(poolId, account);
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Creates a pool held by `memberId`, unless the member already registered one with this metadata hash.
    function _registerPool(uint256 memberId, bytes32 metadataHash) internal returns (uint256 poolId) {
        uint256 registered = _poolIds[memberId][metadataHash];
        if (registered != 0) revert AssetRegistryPoolAlreadyRegistered(registered);
        poolId = ++_poolCount;
        _poolIds[memberId][metadataHash] = poolId;
        Pool storage p = _pools[poolId];
        p.originatorMemberId = memberId;
        p.custodianMemberId = memberId;
        p.metadataHash = metadataHash;
        p.registeredAt = uint64(block.timestamp);
        emit PoolRegistered(poolId, memberId, metadataHash);
    }

    /// @dev Stores the next version of an existing pool, once its latest one is complete, and emits its summary
    /// and first chunk of loan ids.
    function _anchorVersion(
        uint256 poolId,
        uint256 memberId,
        bytes32 root,
        uint32 loanCount,
        uint128 totalPrincipal,
        bytes32[] calldata loanIds
    ) internal returns (uint32 versionNumber) {
        if (root == bytes32(0)) revert AssetRegistryZeroRoot();
        Pool storage p = _pools[poolId];
        _checkLoanIdsComplete(poolId, p.versionCount);
        if (p.versionCount > 0 && _versions[poolId][p.versionCount].root == root) {
            revert AssetRegistryRootUnchanged(poolId, p.versionCount);
        }
        versionNumber = ++p.versionCount;
        if (loanIds.length > loanCount) {
            revert AssetRegistryTooManyLoanIds(poolId, versionNumber, loanIds.length, loanCount);
        }
        _versions[poolId][versionNumber] = PoolVersion({
            root: root,
            loanCount: loanCount,
            totalPrincipal: totalPrincipal,
            anchoredAt: uint64(block.timestamp),
            anchoredByMemberId: memberId
        });
        if (loanIds.length > 0) _loanIdsPublished[poolId][versionNumber] = uint32(loanIds.length);
        emit VersionAnchored(poolId, versionNumber, root, loanCount, totalPrincipal);
        emit LoanIdsPublished(poolId, versionNumber, 0, loanIds);
    }

    /// @dev Emits the next chunk of an anchored version's loan ids, if it starts at `offset` and fits its count.
    function _publishLoanIds(uint256 poolId, uint32 versionNumber, uint32 offset, bytes32[] calldata loanIds)
        internal
    {
        uint32 loanCount = _existingVersion(poolId, versionNumber).loanCount;
        uint32 published = _loanIdsPublished[poolId][versionNumber];
        if (offset != published) revert AssetRegistryLoanIdsOffsetMismatch(poolId, versionNumber, offset, published);
        if (loanIds.length > loanCount - published) {
            revert AssetRegistryTooManyLoanIds(poolId, versionNumber, loanIds.length, loanCount - published);
        }
        _loanIdsPublished[poolId][versionNumber] = published + uint32(loanIds.length);
        emit LoanIdsPublished(poolId, versionNumber, offset, loanIds);
    }

    /// @dev Records a custody transfer proposal from the custodian `fromMemberId` to the member of `to`.
    function _proposeTransfer(uint256 poolId, uint256 fromMemberId, address to) internal {
        uint256 toMemberId = _registry.memberIdOf(to);
        if (toMemberId == fromMemberId || !_registry.isActiveMember(to)) revert AssetRegistryInvalidCustodian(to);
        _pools[poolId].pendingCustodianMemberId = toMemberId;
        emit CustodyTransferProposed(poolId, fromMemberId, toMemberId);
    }

    /// @dev Makes the pending recipient `toMemberId` the custodian, once the latest version is complete.
    function _acceptTransfer(uint256 poolId, uint256 toMemberId) internal {
        Pool storage p = _pools[poolId];
        _checkLoanIdsComplete(poolId, p.versionCount);
        uint256 fromMemberId = p.custodianMemberId;
        p.custodianMemberId = toMemberId;
        p.pendingCustodianMemberId = 0;
        emit CustodyTransferred(poolId, fromMemberId, toMemberId);
    }

    /// @dev Clears the pending transfer of a pool held by `fromMemberId`.
    function _cancelTransfer(uint256 poolId, uint256 fromMemberId) internal {
        Pool storage p = _pools[poolId];
        uint256 toMemberId = p.pendingCustodianMemberId;
        if (toMemberId == 0) revert AssetRegistryNoPendingTransfer(poolId);
        p.pendingCustodianMemberId = 0;
        emit CustodyTransferCancelled(poolId, fromMemberId, toMemberId);
    }

    /// @dev Counts `memberId`'s vote in the round (once) and passes custody when the votes that still count reach the
    /// registry's quorum: a voter suspended or removed since it voted no longer counts, as in the registry's own votes.
    function _voteSuccessor(uint256 poolId, uint64 round, uint256 memberId) internal {
        uint256[] storage voters = _successionVoters[poolId][round];
        for (uint256 i = 0; i < voters.length; ++i) {
            if (voters[i] == memberId) revert AssetRegistryAlreadyVotedSuccessor(poolId, round, memberId);
        }
        voters.push(memberId);
        emit SuccessorVoted(poolId, round, memberId);
        if (_countedSuccessionVotes(poolId, round) >= _registry.requiredVotes()) _succeed(poolId);
    }

    /// @dev The votes of a round cast by members still active.
    function _countedSuccessionVotes(uint256 poolId, uint64 round) internal view returns (uint256 counted) {
        uint256[] storage voters = _successionVoters[poolId][round];
        for (uint256 i = 0; i < voters.length; ++i) {
            if (_isActiveVotingMember(voters[i])) ++counted;
        }
    }

    /// @dev Makes the proposed successor the custodian, if it is still an active `Member`, and closes the vote.
    function _succeed(uint256 poolId) internal {
        Pool storage p = _pools[poolId];
        Succession storage s = _successions[poolId];
        uint256 toMemberId = s.successorMemberId;
        if (!_isActiveVotingMember(toMemberId)) {
            revert AssetRegistryInvalidCustodian(_registry.member(toMemberId).account);
        }
        uint256 fromMemberId = p.custodianMemberId;
        p.custodianMemberId = toMemberId;
        p.pendingCustodianMemberId = 0;
        s.successorMemberId = 0;
        emit CustodySucceeded(poolId, fromMemberId, toMemberId);
    }

    /// @dev Records a servicing report on a complete anchored version, after the pool's last period, with the first
    /// chunk of its loans' statuses.
    function _reportServicing(
        uint256 poolId,
        uint32 versionNumber,
        uint32 period,
        bytes32 statusRoot,
        uint32[7] calldata statusCounts,
        bytes calldata statuses
    ) internal {
        uint32 length = uint32((uint256(_existingVersion(poolId, versionNumber).loanCount) + 1) / 2);
        _checkLoanIdsComplete(poolId, versionNumber);
        Pool storage p = _pools[poolId];
        uint32 last = p.lastServicingPeriod;
        if (period <= last) revert AssetRegistryPeriodNotIncreasing(period, last);
        if (statuses.length > length) revert AssetRegistryTooManyStatuses(poolId, period, statuses.length, length);
        p.lastServicingPeriod = period;
        _statusesProgress[poolId] =
            StatusesProgress({period: period, published: uint32(statuses.length), length: length});
        emit ServicingReported(poolId, versionNumber, period, statusRoot, statusCounts);
        emit LoanStatusesReported(poolId, period, 0, statuses);
    }

    /// @dev Emits the next chunk of the latest period's statuses, if it starts at `offset` and fits their length.
    function _publishStatuses(uint256 poolId, uint32 period, uint32 offset, bytes calldata statuses) internal {
        StatusesProgress storage progress = _statusesProgress[poolId];
        uint32 published = progress.published;
        if (period == 0 || period != progress.period || offset != published) {
            revert AssetRegistryStatusesOffsetMismatch(poolId, period, offset, progress.period, published);
        }
        uint256 remaining = progress.length - published;
        if (statuses.length > remaining) {
            revert AssetRegistryTooManyStatuses(poolId, period, statuses.length, remaining);
        }
        progress.published = published + uint32(statuses.length);
        emit LoanStatusesReported(poolId, period, offset, statuses);
    }

    /// @dev Emits an auditor's attestation of an anchored version.
    function _attest(uint256 poolId, uint32 versionNumber, uint256 auditorMemberId, bytes32 reportHash) internal {
        _existingVersion(poolId, versionNumber);
        emit AuditorAttested(poolId, versionNumber, auditorMemberId, reportHash);
    }

    /// @dev Reverts if the pool's version `versionNumber` (0: none yet) has fewer ids published than its loan count.
    function _checkLoanIdsComplete(uint256 poolId, uint32 versionNumber) internal view {
        if (versionNumber == 0) return;
        uint32 loanCount = _versions[poolId][versionNumber].loanCount;
        uint32 published = _loanIdsPublished[poolId][versionNumber];
        if (published != loanCount) revert AssetRegistryLoanIdsIncomplete(poolId, versionNumber, published, loanCount);
    }

    /// @dev The pool, or a revert if no pool has this id.
    function _existingPool(uint256 poolId) internal view returns (Pool storage p) {
        if (poolId == 0 || poolId > _poolCount) revert AssetRegistryUnknownPool(poolId);
        return _pools[poolId];
    }

    /// @dev The version, or a revert if the pool does not exist or has no such version.
    function _existingVersion(uint256 poolId, uint32 versionNumber) internal view returns (PoolVersion storage v) {
        Pool storage p = _existingPool(poolId);
        if (versionNumber == 0 || versionNumber > p.versionCount) {
            revert AssetRegistryUnknownVersion(poolId, versionNumber);
        }
        return _versions[poolId][versionNumber];
    }
}
