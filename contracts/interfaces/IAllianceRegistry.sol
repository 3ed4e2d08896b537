// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAllianceRegistry
/// @notice Membership registry and governance of the fraud-intelligence alliance: which banks belong to it, which
/// signing address each one uses, their X25519 encryption keys, and the distribution of the alliance hashing key.
/// @dev There is no owner: every change after deployment goes through a proposal voted by the active members with
/// role `Member`. A proposal passes when `votes * 100 > activeVotingMembers() * quorumPercent()`, where `votes`
/// counts only the votes of members that are active `Member`s at that moment (not those suspended or removed
/// since they voted).
interface IAllianceRegistry {
    // ------------------------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------------------------

    /// @notice What a member may do. Only `Member` proposes, votes and writes to the alliance ledgers.
    enum Role {
        None,
        Member,
        Auditor,
        Observer
    }

    /// @notice Lifecycle of a member. `Removed` is final.
    enum MemberStatus {
        None,
        Active,
        Suspended,
        Removed
    }

    /// @notice The governance action carried by a proposal.
    enum ProposalKind {
        Admit,
        Suspend,
        Reinstate,
        Remove,
        RotateSigner
    }

    /// @notice A member registered at deployment, without a vote.
    /// @param account Signing address of the member.
    /// @param role Role granted to the member (not `None`).
    /// @param name Human-readable name of the bank.
    /// @param bankCode Unique bank identifier (e.g. a BIC).
    /// @param encryptionKey X25519 public key used to encrypt envelopes for the member.
    struct FoundingMember {
        address account;
        Role role;
        string name;
        string bankCode;
        bytes32 encryptionKey;
    }

    /// @notice A registered member.
    /// @param account Current signing address.
    /// @param role Role of the member.
    /// @param status Lifecycle status.
    /// @param admittedAt Timestamp of admission.
    /// @param encryptionKey Current X25519 public key.
    /// @param name Human-readable name of the bank.
    /// @param bankCode Unique bank identifier.
    struct Member {
        address account;
        Role role;
        MemberStatus status;
        uint64 admittedAt;
        bytes32 encryptionKey;
        string name;
        string bankCode;
    }

    /// @notice A governance proposal.
    /// @param kind Action to execute once the quorum is met.
    /// @param memberId Target member; 0 for `Admit` until executed, then the id of the new member.
    /// @param account `Admit`: the newcomer. `RotateSigner`: the new signing address. Otherwise the target's
    /// account when the proposal was created (informative only; execution uses `memberId`).
    /// @param role `Admit`: the role granted. Otherwise `None`.
    /// @param encryptionKey `Admit`: the newcomer's X25519 public key. Otherwise zero.
    /// @param proposer Account that created the proposal.
    /// @param createdAt Creation timestamp.
    /// @param expiresAt Last timestamp at which the proposal may be voted or executed.
    /// @param votes Number of votes cast, the proposer's included (some may no longer count, see the contract doc).
    /// @param executed Whether the proposal has been executed.
    /// @param name `Admit`: the newcomer's name. Otherwise empty.
    /// @param bankCode `Admit`: the newcomer's bank code. Otherwise empty.
    struct Proposal {
        ProposalKind kind;
        uint256 memberId;
        address account;
        Role role;
        bytes32 encryptionKey;
        address proposer;
        uint64 createdAt;
        uint64 expiresAt;
        uint32 votes;
        bool executed;
        string name;
        string bankCode;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A member was registered (founder or executed `Admit` proposal).
    /// @param memberId Id of the new member.
    /// @param account Signing address of the new member.
    /// @param role Role granted.
    /// @param name Human-readable name of the bank.
    /// @param bankCode Unique bank identifier.
    event MemberAdmitted(uint256 indexed memberId, address indexed account, Role role, string name, string bankCode);

    /// @notice An active member was suspended.
    /// @param memberId Id of the member.
    /// @param account Signing address of the member.
    event MemberSuspended(uint256 indexed memberId, address indexed account);

    /// @notice A suspended member was made active again.
    /// @param memberId Id of the member.
    /// @param account Signing address of the member.
    event MemberReinstated(uint256 indexed memberId, address indexed account);

    /// @notice A member was removed for good.
    /// @param memberId Id of the member.
    /// @param account Signing address of the member.
    event MemberRemoved(uint256 indexed memberId, address indexed account);

    /// @notice A member's signing address was replaced.
    /// @param memberId Id of the member.
    /// @param oldAccount Previous signing address (never usable again).
    /// @param newAccount New signing address.
    event SignerRotated(uint256 indexed memberId, address indexed oldAccount, address indexed newAccount);

    /// @notice A member's X25519 public key was set.
    /// @param memberId Id of the member.
    /// @param key New X25519 public key.
    event EncryptionKeySet(uint256 indexed memberId, bytes32 key);

    /// @notice A proposal was created.
    /// @param proposalId Id of the proposal.
    /// @param kind Action proposed.
    /// @param memberId Target member (0 for `Admit`).
    /// @param proposer Account that created the proposal.
    /// @param account Newcomer (`Admit`), new signing address (`RotateSigner`) or the target's account.
    /// @param expiresAt Last timestamp at which the proposal may be voted or executed.
    event ProposalCreated(
        uint256 indexed proposalId,
        ProposalKind kind,
        uint256 indexed memberId,
        address indexed proposer,
        address account,
        uint64 expiresAt
    );

    /// @notice A vote was recorded on a proposal (the proposer's own vote included).
    /// @param proposalId Id of the proposal.
    /// @param voter Account that voted.
    /// @param votes Number of votes that count after this one (those of members still active `Member`s).
    /// @param required Number of votes needed to pass at the time of the vote.
    event VoteCast(uint256 indexed proposalId, address indexed voter, uint256 votes, uint256 required);

    /// @notice A proposal reached its quorum and was executed.
    /// @param proposalId Id of the proposal.
    /// @param kind Action executed.
    /// @param memberId Target member (for `Admit`, the id of the new member).
    event ProposalExecuted(uint256 indexed proposalId, ProposalKind kind, uint256 indexed memberId);

    /// @notice A new epoch of the alliance hashing key was started.
    /// @param epoch The new epoch.
    /// @param startedBy Id of the member that started it.
    event KeyEpochStarted(uint32 indexed epoch, uint256 indexed startedBy);

    /// @notice The alliance hashing key of an epoch was sent, encrypted, to a member.
    /// @param recipientMemberId Id of the member that can decrypt the envelope.
    /// @param epoch Key epoch of the wrapped key.
    /// @param senderMemberId Id of the member that published the envelope.
    /// @param envelope Opaque encrypted payload.
    event KeyEnvelopePublished(
        uint256 indexed recipientMemberId, uint32 indexed epoch, uint256 indexed senderMemberId, bytes envelope
    );

    // ------------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------------

    /// @notice The caller is not an active member with role `Member`.
    /// @param account The caller.
    error AllianceRegistryNotActiveMember(address account);

    /// @notice The voter's member already voted on the proposal.
    /// @param proposalId Id of the proposal.
    /// @param voter The caller.
    error AllianceRegistryAlreadyVoted(uint256 proposalId, address voter);

    /// @notice The proposal can no longer be voted or executed.
    /// @param proposalId Id of the proposal.
    /// @param expiredAt Last timestamp at which it was open.
    error AllianceRegistryProposalExpired(uint256 proposalId, uint64 expiredAt);

    /// @notice The proposal does not have enough votes to be executed now.
    /// @param proposalId Id of the proposal.
    /// @param votes Votes that count now (those of members still active `Member`s).
    /// @param required Votes needed now.
    error AllianceRegistryQuorumNotMet(uint256 proposalId, uint256 votes, uint256 required);

    /// @notice No proposal has this id.
    /// @param proposalId The id asked for.
    error AllianceRegistryUnknownProposal(uint256 proposalId);

    /// @notice The proposal was already executed.
    /// @param proposalId Id of the proposal.
    error AllianceRegistryProposalAlreadyExecuted(uint256 proposalId);

    /// @notice No member has this id.
    /// @param memberId The id asked for.
    error AllianceRegistryUnknownMember(uint256 memberId);

    /// @notice The account is, or once was, registered as a member's signing address.
    /// @param account The account.
    error AllianceRegistryAccountInUse(address account);

    /// @notice The bank code is already used by a member (of any status).
    /// @param bankCode The bank code.
    error AllianceRegistryBankCodeInUse(string bankCode);

    /// @notice The role cannot be granted.
    /// @param role The role, as its enum index.
    error AllianceRegistryInvalidRole(uint8 role);

    /// @notice The member's status does not allow the action.
    /// @param memberId Id of the member.
    /// @param status Current status, as its enum index.
    error AllianceRegistryInvalidMemberStatus(uint256 memberId, uint8 status);

    /// @notice An account must not be the zero address.
    error AllianceRegistryZeroAddress();

    /// @notice A member's name must not be empty.
    error AllianceRegistryEmptyName();

    /// @notice A member's bank code must not be empty.
    error AllianceRegistryEmptyBankCode();

    /// @notice The quorum must be within 1..99 percent.
    /// @param quorumPercent The value given.
    error AllianceRegistryInvalidQuorum(uint16 quorumPercent);

    /// @notice The proposal lifetime must be positive.
    /// @param lifetime The value given.
    error AllianceRegistryInvalidLifetime(uint64 lifetime);

    /// @notice At least one founder must have role `Member`.
    error AllianceRegistryNoFoundingMember();

    /// @notice The key epoch has not been started.
    /// @param epoch The epoch given.
    error AllianceRegistryUnknownEpoch(uint32 epoch);

    /// @notice A key envelope must not be empty.
    error AllianceRegistryEmptyEnvelope();

    /// @notice A key envelope is longer than any sealed key needs (every node reads every envelope).
    /// @param length The envelope's length in bytes.
    /// @param maxLength The longest envelope accepted.
    error AllianceRegistryEnvelopeTooLarge(uint256 length, uint256 maxLength);

    /// @notice The caller is not an active member (of any role).
    /// @param account The caller.
    error AllianceRegistryNotActive(address account);

    /// @notice Suspending or removing this member would leave no active `Member` to govern the alliance.
    /// @param memberId The last active voting member.
    error AllianceRegistryLastVotingMember(uint256 memberId);

    // ------------------------------------------------------------------------------------------------------------
    // Governance
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Proposes to admit a new member. Counts the caller's vote and executes at once if that meets the quorum.
    /// @dev Caller must be an active `Member`. Validation is repeated at execution.
    /// @param account Signing address of the newcomer (non-zero, never registered).
    /// @param role Role to grant (not `None`).
    /// @param name Human-readable name of the bank (non-empty).
    /// @param bankCode Bank identifier (non-empty, never registered).
    /// @param encryptionKey X25519 public key of the newcomer.
    /// @return proposalId Id of the new proposal.
    function proposeAdmission(
        address account,
        Role role,
        string calldata name,
        string calldata bankCode,
        bytes32 encryptionKey
    ) external returns (uint256 proposalId);

    /// @notice Proposes to suspend an active member. Counts the caller's vote; may execute at once.
    /// @dev Caller must be an active `Member`.
    /// @param memberId Id of the member to suspend (must be `Active`).
    /// @return proposalId Id of the new proposal.
    function proposeSuspension(uint256 memberId) external returns (uint256 proposalId);

    /// @notice Proposes to reinstate a suspended member. Counts the caller's vote; may execute at once.
    /// @dev Caller must be an active `Member`.
    /// @param memberId Id of the member to reinstate (must be `Suspended`).
    /// @return proposalId Id of the new proposal.
    function proposeReinstatement(uint256 memberId) external returns (uint256 proposalId);

    /// @notice Proposes to remove a member for good. Counts the caller's vote; may execute at once.
    /// @dev Caller must be an active `Member`.
    /// @param memberId Id of the member to remove (must be `Active` or `Suspended`).
    /// @return proposalId Id of the new proposal.
    function proposeRemoval(uint256 memberId) external returns (uint256 proposalId);

    /// @notice Proposes to replace a member's signing address. Counts the caller's vote; may execute at once.
    /// @dev Caller must be an active `Member`. The old address can never be registered again.
    /// @param memberId Id of the member (must be `Active` or `Suspended`).
    /// @param newAccount New signing address (non-zero, never registered).
    /// @return proposalId Id of the new proposal.
    function proposeSignerRotation(uint256 memberId, address newAccount) external returns (uint256 proposalId);

    /// @notice Votes for a proposal and executes it if the quorum is reached.
    /// @dev Caller must be an active `Member` whose member has not voted yet; the proposal must be open.
    /// @param proposalId Id of the proposal.
    function vote(uint256 proposalId) external;

    /// @notice Executes an open proposal whose votes meet the quorum now (e.g. after the active count dropped).
    /// @dev Caller must be an active `Member`.
    /// @param proposalId Id of the proposal.
    function execute(uint256 proposalId) external;

    /// @notice Sets the caller's own X25519 public key.
    /// @dev Caller must be an active member of any role.
    /// @param key New X25519 public key.
    function setEncryptionKey(bytes32 key) external;

    // ------------------------------------------------------------------------------------------------------------
    // Alliance hashing key distribution
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Starts a new epoch of the alliance hashing key.
    /// @dev Caller must be an active `Member`.
    /// @return epoch The new epoch.
    function startKeyEpoch() external returns (uint32 epoch);

    /// @notice Announces the alliance hashing key of an epoch, encrypted for one member. Nothing is stored.
    /// @dev Caller must be an active `Member`.
    /// @param recipientMemberId Id of the recipient (registered, not `Removed`).
    /// @param epoch Key epoch, within 1..currentKeyEpoch().
    /// @param envelope Opaque encrypted payload (1 to 512 bytes).
    function publishKeyEnvelope(uint256 recipientMemberId, uint32 epoch, bytes calldata envelope) external;

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @notice Number of members ever registered (ids run from 1 to this value).
    /// @return count The number of members.
    function memberCount() external view returns (uint256 count);

    /// @notice A registered member.
    /// @param memberId Id of the member (1..memberCount()).
    /// @return info The member.
    function member(uint256 memberId) external view returns (Member memory info);

    /// @notice Id of the member currently signing with `account`, whatever its status (`Removed` included).
    /// @param account A signing address.
    /// @return memberId The member id, or 0 if none (including an address rotated away from).
    function memberIdOf(address account) external view returns (uint256 memberId);

    /// @notice Whether `account` belongs to an `Active` member with role `Member`.
    /// @param account A signing address.
    /// @return active True if the account may vote, propose and write.
    function isActiveMember(address account) external view returns (bool active);

    /// @notice Role of the member signing with `account`.
    /// @param account A signing address.
    /// @return role The role, or `None` unless the member is `Active`.
    function roleOf(address account) external view returns (Role role);

    /// @notice Number of `Active` members with role `Member`.
    /// @return count The number of voting members.
    function activeVotingMembers() external view returns (uint256 count);

    /// @notice Smallest number of votes that passes a proposal now.
    /// @return required The vote count.
    function requiredVotes() external view returns (uint256 required);

    /// @notice Number of proposals ever created (ids run from 1 to this value).
    /// @return count The number of proposals.
    function proposalCount() external view returns (uint256 count);

    /// @notice A proposal.
    /// @param proposalId Id of the proposal (1..proposalCount()).
    /// @return info The proposal.
    function proposal(uint256 proposalId) external view returns (Proposal memory info);

    /// @notice The last proposal executed on a member other than its admission: a suspension, reinstatement, removal
    /// or signer rotation, the latest to execute (not the highest id: a vote that comes late executes an older
    /// proposal after a newer one).
    /// @param memberId Id of the member.
    /// @return proposalId The proposal's id, or 0 if none has executed on it (or no member has this id).
    function lastChangeOf(uint256 memberId) external view returns (uint256 proposalId);

    /// @notice The executed proposal that admitted `account` as a new member's signing address.
    /// @param account A signing address, whether or not its member rotated away from it since.
    /// @return proposalId The proposal's id, or 0 for a founder's account and for one never admitted (including
    /// an address a member rotated to).
    function admissionOf(address account) external view returns (uint256 proposalId);

    /// @notice Whether the member currently signing with `account` has voted on a proposal.
    /// @dev Votes are recorded per member, so a vote survives a signer rotation.
    /// @param proposalId Id of the proposal.
    /// @param account A signing address.
    /// @return voted True if that member voted.
    function hasVoted(uint256 proposalId, address account) external view returns (bool voted);

    /// @notice Quorum, in percent of the active voting members, that a proposal must exceed.
    /// @return percent The quorum.
    function quorumPercent() external view returns (uint16 percent);

    /// @notice How long, in seconds, a proposal stays open.
    /// @return lifetime The lifetime.
    function proposalLifetime() external view returns (uint64 lifetime);

    /// @notice Signing addresses of all `Active` members, any role (e.g. to export a node account allowlist).
    /// @return accounts The addresses, in no particular order.
    function activeAccounts() external view returns (address[] memory accounts);

    /// @notice Current epoch of the alliance hashing key (starts at 1).
    /// @return epoch The epoch.
    function currentKeyEpoch() external view returns (uint32 epoch);
}
