// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import {IAllianceRegistry} from "./interfaces/IAllianceRegistry.sol";

/// @title AllianceRegistry
/// @notice Membership registry and governance of the fraud-intelligence alliance.
/// @dev The deployer only registers the founders; afterwards every change is voted by the active `Member`s.
/// Votes are recorded per member id, so rotating a signer does not allow voting twice, and only the votes of
/// members that are still active `Member`s count towards the quorum.
contract AllianceRegistry is IAllianceRegistry {
    /// @notice Longest key envelope accepted: a node's envelope is 93 bytes (version, ephemeral X25519 key, nonce,
    /// sealed 32-byte key and tag); every node reads every envelope, so none may make that costly.
    uint256 public constant MAX_ENVELOPE_BYTES = 512;

    using EnumerableSet for EnumerableSet.AddressSet;

    uint16 private immutable _quorumPercent;
    uint64 private immutable _proposalLifetime;

    uint256 private _memberCount;
    uint256 private _activeVotingMembers;
    uint256 private _proposalCount;
    uint32 private _currentKeyEpoch;

    mapping(uint256 memberId => Member) private _members;
    mapping(address account => uint256 memberId) private _memberIdOf;
    mapping(address account => bool) private _accountUsed;
    mapping(bytes32 bankCodeHash => bool) private _bankCodeUsed;
    mapping(uint256 proposalId => Proposal) private _proposals;
    /// @dev Bit `memberId % 256` of word `memberId / 256` is set once that member voted on the proposal. A bitmap,
    /// not a list of votes, so that the votes of members suspended or removed since can be left out cheaply.
    mapping(uint256 proposalId => mapping(uint256 word => uint256 bits)) private _votes;
    EnumerableSet.AddressSet private _activeAccounts;
    /// @dev The last proposal executed on each member other than its admission, and the proposal that admitted each
    /// account: a node proposing a change again that is refused as made already reads which proposal made it here,
    /// in one call, where the member's events cost a scan of the chain's whole history.
    mapping(uint256 memberId => uint256 proposalId) private _lastChangeOf;
    mapping(address account => uint256 proposalId) private _admissionOf;

    /// @notice Registers the founders and fixes the governance parameters for the life of the contract.
    /// @param founders Founding members, validated like admissions; at least one must have role `Member`.
    /// @param quorumPercent_ Quorum in percent, within 1..99 (50 means "more than half").
    /// @param proposalLifetime_ Seconds a proposal stays open, positive.
    constructor(FoundingMember[] memory founders, uint16 quorumPercent_, uint64 proposalLifetime_) {
        if (quorumPercent_ == 0 || quorumPercent_ > 99) revert AllianceRegistryInvalidQuorum(quorumPercent_);
        if (proposalLifetime_ == 0) revert AllianceRegistryInvalidLifetime(proposalLifetime_);
        _quorumPercent = quorumPercent_;
        _proposalLifetime = proposalLifetime_;
        _currentKeyEpoch = 1;
        for (uint256 i = 0; i < founders.length; ++i) {
            FoundingMember memory f = founders[i];
            _admit(f.account, f.role, f.name, f.bankCode, f.encryptionKey);
        }
        if (_activeVotingMembers == 0) revert AllianceRegistryNoFoundingMember();
    }

    // ------------------------------------------------------------------------------------------------------------
    // Governance
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAllianceRegistry
    function proposeAdmission(
        address account,
        Role role,
        string calldata name,
        string calldata bankCode,
        bytes32 encryptionKey
    ) external returns (uint256 proposalId) {
        _checkActiveMember(msg.sender);
        _checkAdmission(account, role, name, bankCode);
        Proposal memory draft = _draft(ProposalKind.Admit, 0, account);
        (draft.role, draft.encryptionKey, draft.name, draft.bankCode) = (role, encryptionKey, name, bankCode);
        return _propose(draft, msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function proposeSuspension(uint256 memberId) external returns (uint256 proposalId) {
        _checkActiveMember(msg.sender);
        return _proposeStatusChange(ProposalKind.Suspend, memberId, msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function proposeReinstatement(uint256 memberId) external returns (uint256 proposalId) {
        _checkActiveMember(msg.sender);
        return _proposeStatusChange(ProposalKind.Reinstate, memberId, msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function proposeRemoval(uint256 memberId) external returns (uint256 proposalId) {
        _checkActiveMember(msg.sender);
        return _proposeStatusChange(ProposalKind.Remove, memberId, msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function proposeSignerRotation(uint256 memberId, address newAccount) external returns (uint256 proposalId) {
        _checkActiveMember(msg.sender);
        _checkTargetStatus(ProposalKind.RotateSigner, memberId);
        _checkAccountFree(newAccount);
        return _propose(_draft(ProposalKind.RotateSigner, memberId, newAccount), msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function vote(uint256 proposalId) external {
        _checkActiveMember(msg.sender);
        _checkOpen(proposalId);
        if (_hasVoted(proposalId, _memberIdOf[msg.sender])) revert AllianceRegistryAlreadyVoted(proposalId, msg.sender);
        _castVote(proposalId, msg.sender);
    }

    /// @inheritdoc IAllianceRegistry
    function execute(uint256 proposalId) external {
        _checkActiveMember(msg.sender);
        Proposal storage p = _checkOpen(proposalId);
        uint256 votes = _countedVotes(proposalId);
        if (!_quorumMet(votes)) revert AllianceRegistryQuorumNotMet(proposalId, votes, _requiredVotes());
        _execute(proposalId, p);
    }

    /// @inheritdoc IAllianceRegistry
    function setEncryptionKey(bytes32 key) external {
        uint256 memberId = _memberIdOf[msg.sender];
        if (_members[memberId].status != MemberStatus.Active) revert AllianceRegistryNotActive(msg.sender);
        _setEncryptionKey(memberId, key);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Alliance hashing key distribution
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAllianceRegistry
    function startKeyEpoch() external returns (uint32 epoch) {
        _checkActiveMember(msg.sender);
        return _startKeyEpoch(_memberIdOf[msg.sender]);
    }

    /// @inheritdoc IAllianceRegistry
    function publishKeyEnvelope(uint256 recipientMemberId, uint32 epoch, bytes calldata envelope) external {
        _checkActiveMember(msg.sender);
        _checkEnvelope(recipientMemberId, epoch, envelope);
        emit KeyEnvelopePublished(recipientMemberId, epoch, _memberIdOf[msg.sender], envelope);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAllianceRegistry
    function memberCount() external view returns (uint256 count) {
        return _memberCount;
    }

    /// @inheritdoc IAllianceRegistry
    function member(uint256 memberId) external view returns (Member memory info) {
        _checkMemberExists(memberId);
        return _members[memberId];
    }

    /// @inheritdoc IAllianceRegistry
    function memberIdOf(address account) external view returns (uint256 memberId) {
        return _memberIdOf[account];
    }

    /// @inheritdoc IAllianceRegistry
    function isActiveMember(address account) external view returns (bool active) {
        return _isActiveMember(account);
    }

    /// @inheritdoc IAllianceRegistry
    function roleOf(address account) external view returns (Role role) {
        Member storage m = _members[_memberIdOf[account]];
        return m.status == MemberStatus.Active ? m.role : Role.None;
    }

    /// @inheritdoc IAllianceRegistry
    function activeVotingMembers() external view returns (uint256 count) {
        return _activeVotingMembers;
    }

    /// @inheritdoc IAllianceRegistry
    function requiredVotes() external view returns (uint256 required) {
        return _requiredVotes();
    }

    /// @inheritdoc IAllianceRegistry
    function proposalCount() external view returns (uint256 count) {
        return _proposalCount;
    }

    /// @inheritdoc IAllianceRegistry
    function proposal(uint256 proposalId) external view returns (Proposal memory info) {
        return _proposalAt(proposalId);
    }

    /// @inheritdoc IAllianceRegistry
    function lastChangeOf(uint256 memberId) external view returns (uint256 proposalId) {
        return _lastChangeOf[memberId];
    }

    /// @inheritdoc IAllianceRegistry
    function admissionOf(address account) external view returns (uint256 proposalId) {
        return _admissionOf[account];
    }

    /// @inheritdoc IAllianceRegistry
    function hasVoted(uint256 proposalId, address account) external view returns (bool voted) {
        uint256 memberId = _memberIdOf[account];
        return memberId != 0 && _hasVoted(proposalId, memberId);
    }

    /// @inheritdoc IAllianceRegistry
    function quorumPercent() external view returns (uint16 percent) {
        return _quorumPercent;
    }

    /// @inheritdoc IAllianceRegistry
    function proposalLifetime() external view returns (uint64 lifetime) {
        return _proposalLifetime;
    }

    /// @inheritdoc IAllianceRegistry
    function activeAccounts() external view returns (address[] memory accounts) {
        return _activeAccounts.values();
    }

    /// @inheritdoc IAllianceRegistry
    function currentKeyEpoch() external view returns (uint32 epoch) {
        return _currentKeyEpoch;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Proposals and votes
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Validates the target of a suspension, reinstatement or removal, then proposes it.
    function _proposeStatusChange(ProposalKind kind, uint256 memberId, address proposer) internal returns (uint256) {
        _checkTargetStatus(kind, memberId);
        return _propose(_draft(kind, memberId, _members[memberId].account), proposer);
    }

    /// @dev A proposal with the fields common to every kind filled; the others are left zero/empty.
    function _draft(ProposalKind kind, uint256 memberId, address account) internal pure returns (Proposal memory p) {
        (p.kind, p.memberId, p.account) = (kind, memberId, account);
    }

    /// @dev Stores `draft` as a new proposal of `proposer`, then records the proposer's vote.
    function _propose(Proposal memory draft, address proposer) internal returns (uint256 proposalId) {
        proposalId = ++_proposalCount;
        (draft.proposer, draft.createdAt, draft.expiresAt) = (proposer, uint64(block.timestamp), _expiry());
        _proposals[proposalId] = draft;
        emit ProposalCreated(proposalId, draft.kind, draft.memberId, proposer, draft.account, draft.expiresAt);
        _castVote(proposalId, proposer);
    }

    /// @dev Records the vote of `voter`'s member and executes the proposal if the quorum is now met.
    function _castVote(uint256 proposalId, address voter) internal {
        Proposal storage p = _proposals[proposalId];
        uint256 memberId = _memberIdOf[voter];
        _votes[proposalId][memberId >> 8] |= 1 << (memberId & 0xff);
        ++p.votes;
        uint256 votes = _countedVotes(proposalId);
        emit VoteCast(proposalId, voter, votes, _requiredVotes());
        if (_quorumMet(votes)) _execute(proposalId, p);
    }

    /// @dev Votes on the proposal of members that are active `Member`s now: a member suspended or removed after
    /// voting must not help pass it. Reads one bitmap word per 256 member ids and one member slot per vote.
    function _countedVotes(uint256 proposalId) internal view returns (uint256 count) {
        uint256 memberCount_ = _memberCount;
        uint256 bits;
        for (uint256 memberId = 1; memberId <= memberCount_; ++memberId) {
            if (memberId == 1 || memberId & 0xff == 0) bits = _votes[proposalId][memberId >> 8];
            if ((bits >> (memberId & 0xff)) & 1 == 0) continue;
            Member storage m = _members[memberId];
            if (m.status == MemberStatus.Active && m.role == Role.Member) ++count;
        }
    }

    /// @dev Whether member `memberId` voted on the proposal (whether or not its vote still counts).
    function _hasVoted(uint256 proposalId, uint256 memberId) internal view returns (bool) {
        return (_votes[proposalId][memberId >> 8] >> (memberId & 0xff)) & 1 == 1;
    }

    /// @dev Marks the proposal executed and applies it, re-validating its target; records it as its member's last
    /// change, or as its account's admission.
    function _execute(uint256 proposalId, Proposal storage p) internal {
        p.executed = true;
        ProposalKind kind = p.kind;
        if (kind == ProposalKind.Admit) {
            p.memberId = _admit(p.account, p.role, p.name, p.bankCode, p.encryptionKey);
            _admissionOf[p.account] = proposalId;
        } else {
            _checkTargetStatus(kind, p.memberId);
            _applyStatusChange(kind, p.memberId, p.account);
            _lastChangeOf[p.memberId] = proposalId;
        }
        emit ProposalExecuted(proposalId, kind, p.memberId);
    }

    /// @dev Applies a validated suspension, reinstatement, removal or signer rotation.
    function _applyStatusChange(ProposalKind kind, uint256 memberId, address account) internal {
        if (kind == ProposalKind.Suspend) _suspend(memberId);
        else if (kind == ProposalKind.Reinstate) _reinstate(memberId);
        else if (kind == ProposalKind.Remove) _remove(memberId);
        else _rotateSigner(memberId, account);
    }

    /// @dev Expiry of a proposal created now, saturating at the largest uint64.
    function _expiry() internal view returns (uint64) {
        uint256 expiresAt = block.timestamp + _proposalLifetime;
        return expiresAt > type(uint64).max ? type(uint64).max : uint64(expiresAt);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Member state changes
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Validates and registers a new active member; returns its id.
    function _admit(
        address account,
        Role role,
        string memory name,
        string memory bankCode,
        bytes32 encryptionKey
    ) internal returns (uint256 memberId) {
        _checkAdmission(account, role, name, bankCode);
        memberId = ++_memberCount;
        _members[memberId] = Member(account, role, MemberStatus.None, uint64(block.timestamp), 0, name, bankCode);
        _bankCodeUsed[keccak256(bytes(bankCode))] = true;
        _bindAccount(memberId, account);
        _activate(memberId);
        emit MemberAdmitted(memberId, account, role, name, bankCode);
        _setEncryptionKey(memberId, encryptionKey);
    }

    /// @dev Suspends an active member.
    function _suspend(uint256 memberId) internal {
        _deactivate(memberId, MemberStatus.Suspended);
        emit MemberSuspended(memberId, _members[memberId].account);
    }

    /// @dev Reinstates a suspended member.
    function _reinstate(uint256 memberId) internal {
        _activate(memberId);
        emit MemberReinstated(memberId, _members[memberId].account);
    }

    /// @dev Removes an active or suspended member for good.
    function _remove(uint256 memberId) internal {
        _deactivate(memberId, MemberStatus.Removed);
        emit MemberRemoved(memberId, _members[memberId].account);
    }

    /// @dev Moves a member to `newAccount`; the old account maps to no member and stays unusable.
    function _rotateSigner(uint256 memberId, address newAccount) internal {
        _checkAccountFree(newAccount);
        Member storage m = _members[memberId];
        address oldAccount = m.account;
        delete _memberIdOf[oldAccount];
        m.account = newAccount;
        _bindAccount(memberId, newAccount);
        if (m.status == MemberStatus.Active) _swapActiveAccount(oldAccount, newAccount);
        emit SignerRotated(memberId, oldAccount, newAccount);
    }

    /// @dev Maps `account` to `memberId` and burns it for any future registration.
    function _bindAccount(uint256 memberId, address account) internal {
        _memberIdOf[account] = memberId;
        _accountUsed[account] = true;
    }

    /// @dev Makes a member `Active` and counts it in the active sets.
    function _activate(uint256 memberId) internal {
        Member storage m = _members[memberId];
        m.status = MemberStatus.Active;
        _activeAccounts.add(m.account);
        if (m.role == Role.Member) ++_activeVotingMembers;
    }

    /// @dev Gives a member a non-active status, uncounting it from the active sets if it was `Active`.
    /// Refuses to deactivate the last active `Member`: nobody could ever propose or vote again.
    function _deactivate(uint256 memberId, MemberStatus status) internal {
        Member storage m = _members[memberId];
        if (m.status == MemberStatus.Active) {
            _activeAccounts.remove(m.account);
            if (m.role == Role.Member) {
                if (_activeVotingMembers == 1) revert AllianceRegistryLastVotingMember(memberId);
                --_activeVotingMembers;
            }
        }
        m.status = status;
    }

    /// @dev Replaces an account in the set of active accounts.
    function _swapActiveAccount(address oldAccount, address newAccount) internal {
        _activeAccounts.remove(oldAccount);
        _activeAccounts.add(newAccount);
    }

    /// @dev Stores a member's X25519 public key.
    function _setEncryptionKey(uint256 memberId, bytes32 key) internal {
        _members[memberId].encryptionKey = key;
        emit EncryptionKeySet(memberId, key);
    }

    /// @dev Increments the key epoch on behalf of member `startedBy`.
    function _startKeyEpoch(uint256 startedBy) internal returns (uint32 epoch) {
        epoch = ++_currentKeyEpoch;
        emit KeyEpochStarted(epoch, startedBy);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Checks and internal views
    // ------------------------------------------------------------------------------------------------------------

    /// @dev Reverts unless `account` is an active `Member`.
    function _checkActiveMember(address account) internal view {
        if (!_isActiveMember(account)) revert AllianceRegistryNotActiveMember(account);
    }

    /// @dev Reverts unless a newcomer with these attributes may be registered now.
    function _checkAdmission(address account, Role role, string memory name, string memory bankCode) internal view {
        _checkAccountFree(account);
        if (role == Role.None) revert AllianceRegistryInvalidRole(uint8(role));
        if (bytes(name).length == 0) revert AllianceRegistryEmptyName();
        if (bytes(bankCode).length == 0) revert AllianceRegistryEmptyBankCode();
        if (_bankCodeUsed[keccak256(bytes(bankCode))]) revert AllianceRegistryBankCodeInUse(bankCode);
    }

    /// @dev Reverts unless `account` is non-zero and was never registered.
    function _checkAccountFree(address account) internal view {
        if (account == address(0)) revert AllianceRegistryZeroAddress();
        if (_accountUsed[account]) revert AllianceRegistryAccountInUse(account);
    }

    /// @dev Reverts unless `memberId` exists and its status allows a proposal of `kind`.
    function _checkTargetStatus(ProposalKind kind, uint256 memberId) internal view {
        _checkMemberExists(memberId);
        MemberStatus status = _members[memberId].status;
        if (!_allowsStatus(kind, status)) revert AllianceRegistryInvalidMemberStatus(memberId, uint8(status));
    }

    /// @dev Whether a member in `status` may be the target of a (non-`Admit`) proposal of `kind`.
    function _allowsStatus(ProposalKind kind, MemberStatus status) internal pure returns (bool) {
        if (kind == ProposalKind.Suspend) return status == MemberStatus.Active;
        if (kind == ProposalKind.Reinstate) return status == MemberStatus.Suspended;
        return status == MemberStatus.Active || status == MemberStatus.Suspended;
    }

    /// @dev Reverts unless `memberId` is within 1..memberCount.
    function _checkMemberExists(uint256 memberId) internal view {
        if (memberId == 0 || memberId > _memberCount) revert AllianceRegistryUnknownMember(memberId);
    }

    /// @dev Reverts unless the proposal exists, is not executed and has not expired; returns it.
    function _checkOpen(uint256 proposalId) internal view returns (Proposal storage p) {
        p = _proposalAt(proposalId);
        if (p.executed) revert AllianceRegistryProposalAlreadyExecuted(proposalId);
        if (block.timestamp > p.expiresAt) revert AllianceRegistryProposalExpired(proposalId, p.expiresAt);
    }

    /// @dev Reverts unless a key envelope may be published for this recipient and epoch.
    function _checkEnvelope(uint256 recipientMemberId, uint32 epoch, bytes calldata envelope) internal view {
        _checkMemberExists(recipientMemberId);
        MemberStatus status = _members[recipientMemberId].status;
        if (status == MemberStatus.Removed) revert AllianceRegistryInvalidMemberStatus(recipientMemberId, uint8(status));
        if (epoch == 0 || epoch > _currentKeyEpoch) revert AllianceRegistryUnknownEpoch(epoch);
        if (envelope.length == 0) revert AllianceRegistryEmptyEnvelope();
        if (envelope.length > MAX_ENVELOPE_BYTES) revert AllianceRegistryEnvelopeTooLarge(envelope.length, MAX_ENVELOPE_BYTES);
    }

    /// @dev The proposal with this id; reverts if there is none.
    function _proposalAt(uint256 proposalId) internal view returns (Proposal storage) {
        if (proposalId == 0 || proposalId > _proposalCount) revert AllianceRegistryUnknownProposal(proposalId);
        return _proposals[proposalId];
    }

    /// @dev Whether `account` belongs to an `Active` member with role `Member` (two storage reads).
    function _isActiveMember(address account) internal view returns (bool) {
        Member storage m = _members[_memberIdOf[account]];
        return m.status == MemberStatus.Active && m.role == Role.Member;
    }

    /// @dev Whether `votes` pass a proposal now.
    function _quorumMet(uint256 votes) internal view returns (bool) {
        return votes * 100 > _activeVotingMembers * _quorumPercent;
    }

    /// @dev Smallest vote count that passes a proposal now.
    function _requiredVotes() internal view returns (uint256) {
        return (_activeVotingMembers * _quorumPercent) / 100 + 1;
    }
}
