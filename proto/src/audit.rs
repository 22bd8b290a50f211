//! The audit record: one link of the hash chain on KRISBUD_AUDIT.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::DeliveryState;
use crate::model::Channel;

/// One record of the audit chain. docs/audit-format.md specifies how `hash` is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
    /// The event's sequence in KRISBUD_EVENTS.
    pub event_sequence: u64,
    /// The event's envelope as it was appended; it holds no personal data in clear.
    pub event: serde_json::Value,
    /// `hash` of the previous record; 64 zeros for the first.
    pub prev_hash: String,
    /// Record 1 only (the chain's genesis record): the chain's identity, 128
    /// random bits in hex, drawn when the chain began. Every checkpoint names it,
    /// so a chain rebuilt from scratch has another id, whatever it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Hex SHA-256 over the canonical encoding of this record without `hash`.
    pub hash: String,
}

/// The chain's `prev_hash` before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyReport {
    /// Records checked.
    pub checked: u64,
    /// True when every record's hash and link are right, no sequence is missing,
    /// every checkpoint is validly signed and, for the live stream, every event
    /// has its record.
    pub ok: bool,
    /// The first bad record, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<VerifyFailure>,
    /// Hash of the last record checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Signed checkpoints whose signature and hash were checked.
    #[serde(default)]
    pub checkpoints: u64,
    /// The last record covered by a valid signed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_up_to: Option<u64>,
    /// The ids of the keys that signed the checked checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// What an auditor should know that does not make the chain wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The chain compared with KRISBUD_EVENTS (verification of the live stream only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completeness: Option<Completeness>,
    /// The chain's id: the random id its record 1 carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The records no valid checkpoint covers, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_tail: Option<UnsignedTail>,
    /// The saved point the chain was found to extend (`verify --since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<ChainPoint>,
    /// Whether the signing keys were checked against a key the auditor trusts
    /// (`--trust-key`); without one, a bundle re-signed by anybody verifies.
    #[serde(default)]
    pub trusted_key_checked: bool,
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyFailure {
    pub sequence: u64,
    /// `hash mismatch`, `broken link`, `gap`, `unreadable`, `bad signature`,
    /// `checkpoint mismatch` or `missing record`.
    pub problem: String,
    pub detail: String,
}

/// One page of audit records, as the audit service answers a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Where the next page starts, when there is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sequence: Option<u64>,
    /// The chain's last record when the page was read (an export stops there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
}

/// The signature algorithm of checkpoints and key endorsements.
pub const SIGNATURE_ALGORITHM: &str = "Ed25519";

/// A signed statement that the chain held record `sequence` with hash `hash` at
/// `signed_at`. docs/audit-format.md specifies what is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Checkpoint {
    /// The record the checkpoint covers (and with it every record before it).
    pub sequence: u64,
    /// That record's `hash`.
    pub hash: String,
    /// When the audit service signed it: RFC 3339, UTC, like `recorded_at`.
    pub signed_at: DateTime<Utc>,
    /// The signing key's id (see [`AuditPublicKey::key_id`]).
    pub key_id: String,
    /// The chain it belongs to: the random id in the chain's record 1 (its
    /// genesis record; the hash of record 1 for a chain begun before records
    /// carried one). A chain rebuilt after a deletion has another id. Absent in
    /// checkpoints signed before chains had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Lowercase hex of the 64-byte Ed25519 signature over the canonical JSON of
    /// this object without `signature`.
    pub signature: String,
}

/// A point of a chain an auditor saved earlier (a checkpoint, or a line of a
/// witness file): the chain verified now must hold the same record there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChainPoint {
    pub sequence: u64,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
}

/// The records after the last valid signed checkpoint: hash-chained, but nothing
/// yet proves who wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnsignedTail {
    pub records: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// When the first of them was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recorded_at: Option<DateTime<Utc>>,
    /// When the last of them was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recorded_at: Option<DateTime<Utc>>,
}

/// One page of checkpoints, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointPage {
    pub checkpoints: Vec<Checkpoint>,
    /// Where the next page starts (`from_sequence`), when there is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sequence: Option<u64>,
}

/// A public key that signs checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditPublicKey {
    /// The first 16 hex digits of the SHA-256 of the 32 raw public key bytes.
    pub key_id: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// Lowercase hex of the 32 raw public key bytes.
    pub public_key: String,
    /// When the key was registered in the chain (its `AuditKeyRotated` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// The answer of `GET /audit/public-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditKeys {
    /// The key the audit service signs with now.
    pub current: AuditPublicKey,
    /// Every key registered in the chain, oldest first.
    pub history: Vec<AuditPublicKey>,
}

/// Event payload: the audit service's signing key changed (or was registered for
/// the first time). It is recorded in the chain like every event, so the chain
/// itself says which key signs the checkpoints from which record on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditKeyRotated {
    /// The new key's id.
    pub key_id: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// Lowercase hex of the new key's 32 raw public key bytes.
    pub public_key: String,
    /// The key signing before this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_id: Option<String>,
    /// The previous key's signature (hex) over the canonical JSON of this object
    /// without `endorsement`: the old key vouches for the new one. Missing when
    /// the old key was not at hand (lost or compromised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<String>,
}

/// What kind of address a recipient lookup was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    Phone,
    Email,
}

/// Event payload: an auditor asked whether a person was notified. It holds the
/// keyed hash that was looked up, never the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecipientLookedUp {
    /// The keyed hash (`rcp:<hex>`) of the normalised address.
    pub recipient: String,
    pub address_kind: AddressKind,
    /// The crisis the lookup was limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_id: Option<String>,
    /// How many outcomes the answer held.
    pub outcomes: u64,
}

/// How a person signed in to the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    /// A configured user's name and secret.
    Password,
    /// The city's identity provider (OpenID Connect).
    Oidc,
}

/// What happened to a console session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionChange {
    SignedIn,
    SignedOut,
    /// A sign-in that did not succeed; the actor is the name that was tried.
    SignInRefused,
}

/// A console sign-in, sign-out or refused sign-in, as the gateway reports it to
/// the audit service (`krisbud.cmd.audit.session`) and the chain records it.
/// Never a password, a token or a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleSession {
    pub change: SessionChange,
    pub method: SignInMethod,
    /// The identity provider's subject (`sub`) of an OIDC sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub idp_subject: Option<String>,
    /// The roles the session holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<crate::Role>,
    /// Why a sign-in was refused, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub reason: Option<String>,
}

/// Ask for checkpoints, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointQuery {
    /// First covered record sequence to return (1 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Ask for the signing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublicKeyQuery {}

/// How a crisis report is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// The report's data only.
    #[default]
    Json,
    Markdown,
    Html,
}

/// Ask for the report of one crisis, drawn from the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisReportQuery {
    pub crisis_id: String,
    #[serde(default)]
    pub format: ReportFormat,
}

/// A crisis report and, for Markdown or HTML, its rendered text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisReportReply {
    pub report: CrisisReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What the audit chain says about one crisis: for an inquiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisReport {
    pub crisis_id: String,
    /// When the report was drawn up.
    pub generated_at: DateTime<Utc>,
    /// The last record of the chain when the report was drawn up; every line of
    /// the report names the record it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<ChainPosition>,
    /// The declaration: who and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<TimelineEntry>,
    /// `Actual`, `Exercise` or `Test` (CAP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The template version used, `<id> v<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Every event of the crisis in chain order.
    pub timeline: Vec<TimelineEntry>,
    /// Per channel: planned, sent, delivered, failed.
    pub channels: Vec<ChannelReport>,
    /// Operator confirmations with who and when.
    pub confirmations: Vec<ConfirmationEntry>,
    /// Escalations, when any were recorded.
    pub escalations: Vec<TimelineEntry>,
}

/// A record of the chain: its sequence and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChainPosition {
    pub sequence: u64,
    pub hash: String,
}

/// One event in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// The audit record it comes from.
    pub sequence: u64,
    pub occurred_at: DateTime<Utc>,
    /// The user or service that caused it.
    pub actor: String,
    pub kind: String,
    /// One line for a person.
    pub summary: String,
}

/// One channel's outcomes in a report. Each recipient is counted once, in the
/// state of its last outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelReport {
    pub channel: Channel,
    /// Recipients planned (one per language for banner and intranet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<u64>,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Planned recipients without an outcome yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// Failed recipients by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Recipients with an outcome flagged `possible_duplicate`: their batch was
    /// sent again after a crash, so they may have got the message twice.
    #[serde(default)]
    pub possible_duplicates: u64,
    /// `DeliveryReported` events counted.
    pub reports: u64,
}

/// An operator's confirmation in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationEntry {
    pub sequence: u64,
    pub channel: Channel,
    pub revision: u32,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// "Was this person notified?": an auditor gives a phone number or an email
/// address; the audit service answers from its keyed hash and records the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecipientLookup {
    /// A phone number (Swedish national or international form) or an email address.
    pub address: String,
    /// Only this crisis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis: Option<String>,
}

/// The answer to a recipient lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecipientLookupAnswer {
    /// The keyed hash the outcomes are recorded under.
    pub recipient: String,
    pub address_kind: AddressKind,
    /// Every recorded outcome for the recipient, in chain order.
    pub outcomes: Vec<RecipientDelivery>,
}

/// One recorded outcome for a looked-up recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecipientDelivery {
    /// The audit record holding the `DeliveryReported` event.
    pub sequence: u64,
    pub crisis_id: String,
    pub channel: Channel,
    pub job_id: String,
    pub provider: String,
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What comparing the chain with KRISBUD_EVENTS found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Completeness {
    /// True when every event up to the last recorded one has its record and every
    /// record its event, unchanged.
    pub ok: bool,
    /// Events in KRISBUD_EVENTS compared.
    pub events: u64,
    /// Events without a record, by event sequence (the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<u64>,
    /// How many events have no record.
    #[serde(default)]
    pub missing_count: u64,
    /// Records whose event is not in KRISBUD_EVENTS or differs from it (the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<OrphanRecord>,
    /// How many records have no matching event.
    #[serde(default)]
    pub orphan_count: u64,
    /// Events after the last recorded one that the recorder has not reached yet.
    #[serde(default)]
    pub pending: u64,
}

/// A record without its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrphanRecord {
    pub sequence: u64,
    pub event_sequence: u64,
    /// `no event` or `event differs`.
    pub problem: String,
}

/// The first line of an export bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleHeader {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always 1.
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    /// The last record the bundle holds (0 when the chain is empty).
    pub last_sequence: u64,
}

/// [`BundleHeader::format`].
pub const BUNDLE_FORMAT: &str = "krisbud-audit-bundle";

/// A line of an export bundle that is not a record: each is an object with one
/// member naming what it holds. Records are written as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BundleLine {
    Bundle(BundleHeader),
    PublicKey(AuditPublicKey),
    Checkpoint(Checkpoint),
}
