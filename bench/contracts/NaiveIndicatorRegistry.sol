// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title NaiveIndicatorRegistry
/// @notice Benchmark baseline only (bench/ledger_publish.py): the obvious design that stores every indicator
/// with its fields in a mapping, one indicator per call, and emits one event per indicator.
contract NaiveIndicatorRegistry {
    struct Entry {
        address reporter;
        uint8 identifierType;
        uint8 category;
        uint8 confidence;
        uint40 validFrom;
        uint40 validUntil;
        bytes32 evidenceHash;
        bytes32 caseRefHash;
    }

    mapping(bytes32 indicator => Entry) public entries;

    event IndicatorReported(
        bytes32 indexed indicator,
        address indexed reporter,
        uint8 identifierType,
        uint8 category,
        uint8 confidence,
        uint40 validFrom,
        uint40 validUntil,
        bytes32 evidenceHash,
        bytes32 caseRefHash
    );

    function report(
        bytes32 indicator,
        uint8 identifierType,
        uint8 category,
        uint8 confidence,
        uint40 validFrom,
        uint40 validUntil,
        bytes32 evidenceHash,
        bytes32 caseRefHash
    ) external {
        entries[indicator] = Entry(
            msg.sender, identifierType, category, confidence, validFrom, validUntil, evidenceHash, caseRefHash
        );
        emit IndicatorReported(
            indicator, msg.sender, identifierType, category, confidence, validFrom, validUntil, evidenceHash, caseRefHash
        );
    }
}
