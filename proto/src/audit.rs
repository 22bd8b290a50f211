//! The audit record: one link of the hash chain on KRISBUD_AUDIT.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One record of the audit chain. ARCHITECTURE.md specifies how `hash` is computed.
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
    /// Hex SHA-256 over the canonical encoding of this record without `hash`.
    pub hash: String,
}

/// The chain's `prev_hash` before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyReport {
    /// Records checked.
    pub checked: u64,
    /// True when every record's hash and link are right and no sequence is missing.
    pub ok: bool,
    /// The first bad record, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<VerifyFailure>,
    /// Hash of the last record checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyFailure {
    pub sequence: u64,
    /// `hash mismatch`, `broken link`, `gap` or `unreadable`.
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
}
