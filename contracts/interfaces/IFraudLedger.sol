// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IFraudLedger
/// @notice Shared ledger of keyed-hash fraud indicators: member banks publish batches of records anchored by a
/// Merkle root, and endorse, dispute, confirm or revoke indicators.
/// @dev To keep the cost near calldata cost, records are neither stored nor re-emitted in events. They travel as
/// packed calldata (`RECORD_BYTES` bytes each, big-endian): `indicator bytes32 | identifierType uint8 |
/// category uint8 | confidence uint8 | validFrom uint40 | validUntil uint40 | evidenceHash bytes32 |
/// caseRefHash bytes32`. Every node's indexer reads them from the transaction input of `publishBatch`,
/// recomputes the OpenZeppelin `StandardMerkleTree` root over the leaf encoding
/// `["bytes32","uint8","uint8","uint8","uint40","uint40","bytes32","bytes32"]` and accepts the batch only if it
/// equals the published root.
///
/// The contract does not validate the fields of individual records (doing so would break the gas budget of
/// 2,000 gas per indicator). Indexers validate each record deterministically and ignore, without rejecting the
/// rest of the batch, any record whose `category` is outside 1..9, whose `confidence` exceeds 100, whose
/// `validUntil` is not after `validFrom`, or whose validity exceeds 6 * 365 days. Likewise `confirm` and `revoke`
/// do not check that the indicator belongs to the batch: indexers check it against the batch's records and
/// ignore the event otherwise.
interface IFraudLedger {
    // ------------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A published batch (two storage slots).
    /// @param root Merkle root of the batch's records (StandardMerkleTree, leaf encoding in the contract doc).
    /// @param reporterMemberId Registry member id of the publishing bank.
    /// @param epoch Alliance hashing-key epoch the indicators were computed with.
    /// @param count Number of records in the batch.
    /// @param publishedAt Timestamp of the block that recorded the batch.
    struct Batch {
        bytes32 root;
        uint64 reporterMemberId;
        uint32 epoch;
        uint32 count;
        uint64 publishedAt;
    }

    /// @notice One fraud-indicator record, as packed in `publishBatch` calldata and hashed into the Merkle tree.
    /// @param indicator Keyed hash of the identifier (account, IBAN, phone, ...) under the epoch's alliance key.
    /// @param identifierType Kind of identifier that was hashed.
    /// @param category Fraud category, 1..9 (checked by indexers).
    /// @param confidence Reporter's confidence in percent, 0..100 (checked by indexers).
    /// @param validFrom First timestamp at which the record applies.
    /// @param validUntil Timestamp after which the record no longer applies (after `validFrom`, within 6 years).
    /// @param evidenceHash Hash of the reporter's off-chain evidence.
    /// @param caseRefHash Hash of the reporter's internal case reference.
    struct Record {
        bytes32 indicator;
        uint8 identifierType;
        uint8 category;
        uint8 confidence;
        uint40 validFrom;
        uint40 validUntil;
        bytes32 evidenceHash;
        bytes32 caseRefHash;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A batch of records was published; the records are in the transaction's calldata.
    /// @param batchId Id of the new batch (from 1).
    /// @param reporterMemberId Registry member id of the publisher.
    /// @param root Merkle root of the records.
    /// @param epoch Alliance hashing-key epoch of the indicators.
    /// @param count Number of records.
    event BatchPublished(
        uint256 indexed batchId, uint256 indexed reporterMemberId, bytes32 indexed root, uint32 epoch, uint32 count
    );

    /// @notice A member endorsed an indicator.
    /// @param indicator The indicator endorsed.
    /// @param memberId Registry member id of the endorser.
    /// @param confidence Endorser's confidence in percent, 0..100.
    event IndicatorEndorsed(bytes32 indexed indicator, uint256 indexed memberId, uint8 confidence);

    /// @notice A member disputed an indicator.
    /// @param indicator The indicator disputed.
    /// @param memberId Registry member id of the disputer.
    /// @param reasonCode Reason of the dispute, 1..5.
    event IndicatorDisputed(bytes32 indexed indicator, uint256 indexed memberId, uint8 reasonCode);

    /// @notice The reporter of a batch confirmed one of its indicators.
    /// @param indicator The indicator confirmed (indexers check it belongs to the batch).
    /// @param batchId Batch that carried the indicator.
    /// @param memberId Registry member id of the reporter.
    event IndicatorConfirmed(bytes32 indexed indicator, uint256 indexed batchId, uint256 indexed memberId);

    /// @notice The reporter of a batch revoked one of its indicators.
    /// @param indicator The indicator revoked (indexers check it belongs to the batch).
    /// @param batchId Batch that carried the indicator.
    /// @param memberId Registry member id of the reporter.
    /// @param reasonCode Reason of the revocation (not interpreted by the contract).
    event IndicatorRevoked(
        bytes32 indexed indicator, uint256 indexed batchId, uint256 indexed memberId, uint8 reasonCode
    );

    // ------------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------------

    /// @notice The caller is not an active registry member with role `Member`.
    /// @param account The caller.
    error FraudLedgerNotMember(address account);

    /// @notice The epoch is 0 or later than the registry's current key epoch.
    /// @param epoch The epoch given.
    error FraudLedgerUnknownEpoch(uint32 epoch);

    /// @notice The records are empty or their length is not a multiple of `RECORD_BYTES`.
    /// @param length Length of the records in bytes.
    error FraudLedgerMalformedRecords(uint256 length);

    /// @notice The batch holds more than `MAX_BATCH_RECORDS` records.
    /// @param count Number of records given.
    /// @param max `MAX_BATCH_RECORDS`.
    error FraudLedgerBatchTooLarge(uint256 count, uint256 max);

    /// @notice The root is zero or the same reporter already published it (a resent batch is never recorded twice).
    /// @dev Another member's batch with the same root does not count: nobody can block a member's batch by
    /// publishing its root first.
    /// @param root The root given.
    /// @param existingBatchId The reporter's batch that already holds the root, or 0 for the zero root.
    error FraudLedgerDuplicateBatch(bytes32 root, uint256 existingBatchId);

    /// @notice No batch has this id.
    /// @param batchId The id given.
    error FraudLedgerUnknownBatch(uint256 batchId);

    /// @notice The caller is not the member that published the batch.
    /// @param batchId The batch.
    /// @param account The caller.
    error FraudLedgerNotReporter(uint256 batchId, address account);

    /// @notice The confidence exceeds 100.
    /// @param confidence The confidence given.
    error FraudLedgerInvalidConfidence(uint8 confidence);

    /// @notice The dispute reason is outside 1..5.
    /// @param reasonCode The reason given.
    error FraudLedgerInvalidReason(uint8 reasonCode);

    // ------------------------------------------------------------------------------------------------------------
    // Writes
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Publishes a batch of packed records under their Merkle root. Active members only.
    /// @dev Only the batch header is stored; the records stay in calldata for the indexers (see contract doc).
    /// @param epoch Alliance hashing-key epoch of the indicators, within 1..registry.currentKeyEpoch().
    /// @param root StandardMerkleTree root of the records; non-zero and never published before by the same member.
    /// @param records 1..`MAX_BATCH_RECORDS` records of `RECORD_BYTES` bytes each.
    /// @return batchId Id of the new batch.
    function publishBatch(uint32 epoch, bytes32 root, bytes calldata records) external returns (uint256 batchId);

    /// @notice Endorses an indicator published by any member. Active members only.
    /// @param indicator The indicator.
    /// @param confidence Confidence in percent, 0..100.
    function endorse(bytes32 indicator, uint8 confidence) external;

    /// @notice Disputes an indicator published by any member. Active members only.
    /// @param indicator The indicator.
    /// @param reasonCode Reason of the dispute, 1..5.
    function dispute(bytes32 indicator, uint8 reasonCode) external;

    /// @notice Confirms an indicator of one's own batch. Active members only, and only the batch's reporter.
    /// @dev Membership of the indicator in the batch is checked by indexers against the records.
    /// @param batchId The batch that carried the indicator.
    /// @param indicator The indicator.
    function confirm(uint256 batchId, bytes32 indicator) external;

    /// @notice Revokes an indicator of one's own batch. Active members only, and only the batch's reporter.
    /// @dev Membership of the indicator in the batch is checked by indexers against the records.
    /// @param batchId The batch that carried the indicator.
    /// @param indicator The indicator.
    /// @param reasonCode Reason of the revocation (not interpreted by the contract).
    function revoke(uint256 batchId, bytes32 indicator, uint8 reasonCode) external;

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Size in bytes of one packed record.
    /// @return size 109 (32 + 1 + 1 + 1 + 5 + 5 + 32 + 32).
    function RECORD_BYTES() external view returns (uint256 size);

    /// @notice Largest number of records in one batch.
    /// @return max 5000.
    function MAX_BATCH_RECORDS() external view returns (uint256 max);

    /// @notice The membership registry this ledger trusts.
    /// @return registryAddress Address of the AllianceRegistry.
    function registry() external view returns (address registryAddress);

    /// @notice Number of batches published so far (the last batch id).
    /// @return count Number of batches.
    function batchCount() external view returns (uint256 count);

    /// @notice A published batch. Reverts with `FraudLedgerUnknownBatch` for an unknown id.
    /// @param batchId Id of the batch.
    /// @return info The batch header.
    function batch(uint256 batchId) external view returns (Batch memory info);

    /// @notice The batch in which a member published a root.
    /// @param reporterMemberId Registry member id of the reporter.
    /// @param root A Merkle root.
    /// @return batchId Id of the batch, or 0 if that member never published the root.
    function batchIdOfRoot(uint256 reporterMemberId, bytes32 root) external view returns (uint256 batchId);

    /// @notice Whether a record belongs to a batch, by its StandardMerkleTree proof.
    /// @dev Reverts with `FraudLedgerUnknownBatch` for an unknown id.
    /// @param batchId Id of the batch.
    /// @param record The record.
    /// @param proof Merkle proof of the record's leaf, as produced by StandardMerkleTree.
    /// @return valid True if the proof leads from the record's leaf to the batch's root.
    function verifyRecord(uint256 batchId, Record calldata record, bytes32[] calldata proof)
        external
        view
        returns (bool valid);
}
