// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IAllianceRegistry} from "./interfaces/IAllianceRegistry.sol";
import {IFraudLedger} from "./interfaces/IFraudLedger.sol";

/// @title FraudLedger
/// @notice Shared ledger of keyed-hash fraud indicators of the alliance.
/// @dev Stores only batch headers (two slots each) and the root-to-batch index; the records travel as packed
/// calldata and are validated by the indexers (see IFraudLedger).
contract FraudLedger is IFraudLedger {
    /// @inheritdoc IFraudLedger
    uint256 public constant RECORD_BYTES = 109;
    /// @inheritdoc IFraudLedger
    uint256 public constant MAX_BATCH_RECORDS = 5000;

    /// @dev The membership registry deciding who may write; fixed at deployment.
    IAllianceRegistry private immutable _registry;

    /// @dev Number of batches published, which is also the id of the last one (ids start at 1).
    uint256 private _batchCount;
    /// @dev Batch headers by id; a zero root marks an unknown id (published roots are never zero).
    mapping(uint256 batchId => Batch) private _batches;
    /// @dev Batch id of every published root by its reporter, which makes a resent batch impossible to record twice.
    /// Per reporter, not global: otherwise a member could publish another's root first (copied from its pending
    /// transaction, with junk records) and have the other's batch refused for good.
    mapping(uint256 reporterMemberId => mapping(bytes32 root => uint256 batchId)) private _batchIdOfRoot;

    /// @notice Binds the ledger to the membership registry for the life of the contract.
    /// @param registry_ The AllianceRegistry deciding who may write.
    constructor(IAllianceRegistry registry_) {
        _registry = registry_;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Writes
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IFraudLedger
    function publishBatch(uint32 epoch, bytes32 root, bytes calldata records) external returns (uint256 batchId) {
        _checkActiveMember(msg.sender);
        return _publishBatch(epoch, root, records, msg.sender);
    }

    /// @inheritdoc IFraudLedger
    function endorse(bytes32 indicator, uint8 confidence) external {
        _checkActiveMember(msg.sender);
        _endorse(indicator, confidence, msg.sender);
    }

    /// @inheritdoc IFraudLedger
    function dispute(bytes32 indicator, uint8 reasonCode) external {
        _checkActiveMember(msg.sender);
        _dispute(indicator, reasonCode, msg.sender);
    }

    /// @inheritdoc IFraudLedger
    function confirm(uint256 batchId, bytes32 indicator) external {
        _checkActiveMember(msg.sender);
        uint256 memberId = _checkReporter(batchId, msg.sender);
        emit IndicatorConfirmed(indicator, batchId, memberId);
    }

    /// @inheritdoc IFraudLedger
    function revoke(uint256 batchId, bytes32 indicator, uint8 reasonCode) external {
        _checkActiveMember(msg.sender);
        uint256 memberId = _checkReporter(batchId, msg.sender);
        emit IndicatorRevoked(indicator, batchId, memberId, reasonCode);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IFraudLedger
    function registry() external view returns (address registryAddress) {
        return address(_registry);
    }

    /// @inheritdoc IFraudLedger
    function batchCount() external view returns (uint256 count) {
        return _batchCount;
    }

    /// @inheritdoc IFraudLedger
    function batch(uint256 batchId) external view returns (Batch memory info) {
        return _batchAt(batchId);
    }

    /// @inheritdoc IFraudLedger
    function batchIdOfRoot(uint256 reporterMemberId, bytes32 root) external view returns (uint256 batchId) {
        return _batchIdOfRoot[reporterMemberId][root];
    }

    /// @inheritdoc IFraudLedger
    function verifyRecord(uint256 batchId, Record calldata record, bytes32[] calldata proof)
        external
        view
        returns (bool valid)
    {
        bytes32 root = _batchAt(batchId).root;
        return MerkleProof.verifyCalldata(proof, root, _leaf(record));
    }

    // ------------------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Checks the batch header (not the records' fields, see IFraudLedger), stores it and emits the event.
    function _publishBatch(uint32 epoch, bytes32 root, bytes calldata records, address reporter)
        private
        returns (uint256 batchId)
    {
        if (epoch == 0 || epoch > _registry.currentKeyEpoch()) revert FraudLedgerUnknownEpoch(epoch);
        uint256 length = records.length;
        if (length == 0 || length % RECORD_BYTES != 0) revert FraudLedgerMalformedRecords(length);
        uint256 count = length / RECORD_BYTES;
        if (count > MAX_BATCH_RECORDS) revert FraudLedgerBatchTooLarge(count, MAX_BATCH_RECORDS);
        uint256 reporterMemberId = _registry.memberIdOf(reporter);
        uint256 existing = _batchIdOfRoot[reporterMemberId][root];
        if (root == bytes32(0) || existing != 0) revert FraudLedgerDuplicateBatch(root, existing);

        batchId = ++_batchCount;
        _batches[batchId] = Batch({
            root: root,
            reporterMemberId: uint64(reporterMemberId),
            epoch: epoch,
            count: uint32(count),
            publishedAt: uint64(block.timestamp)
        });
        _batchIdOfRoot[reporterMemberId][root] = batchId;
        emit BatchPublished(batchId, reporterMemberId, root, epoch, uint32(count));
    }

    /// @dev Checks the confidence and emits `IndicatorEndorsed` with the endorser's member id.
    function _endorse(bytes32 indicator, uint8 confidence, address account) private {
        if (confidence > 100) revert FraudLedgerInvalidConfidence(confidence);
        emit IndicatorEndorsed(indicator, _registry.memberIdOf(account), confidence);
    }

    /// @dev Checks the reason code and emits `IndicatorDisputed` with the disputer's member id.
    function _dispute(bytes32 indicator, uint8 reasonCode, address account) private {
        if (reasonCode == 0 || reasonCode > 5) revert FraudLedgerInvalidReason(reasonCode);
        emit IndicatorDisputed(indicator, _registry.memberIdOf(account), reasonCode);
    }

    /// @dev Reverts unless `account` is an active registry member with role `Member`.
    function _checkActiveMember(address account) private view {
        if (!_registry.isActiveMember(account)) revert FraudLedgerNotMember(account);
    }

    /// @dev Reverts unless batch `batchId` exists and `account` is its reporter; returns the reporter's member id.
    function _checkReporter(uint256 batchId, address account) private view returns (uint256 memberId) {
        uint64 reporterMemberId = _batchAt(batchId).reporterMemberId;
        memberId = _registry.memberIdOf(account);
        if (memberId != reporterMemberId) revert FraudLedgerNotReporter(batchId, account);
    }

    /// @dev The stored batch `batchId`; reverts with `FraudLedgerUnknownBatch` if there is none.
    function _batchAt(uint256 batchId) private view returns (Batch storage b) {
        b = _batches[batchId];
        if (b.root == bytes32(0)) revert FraudLedgerUnknownBatch(batchId);
    }

    /// @dev The OpenZeppelin StandardMerkleTree leaf of a record: double keccak of its ABI encoding.
    function _leaf(Record calldata r) private pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(
                        r.indicator,
                        r.identifierType,
                        r.category,
                        r.confidence,
                        r.validFrom,
                        r.validUntil,
                        r.evidenceHash,
                        r.caseRefHash
                    )
                )
            )
        );
    }
}
