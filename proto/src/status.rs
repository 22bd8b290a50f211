//! The crisis status read model, as the API shows it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AlertStatus, Channel};
use crate::template::TemplateRef;

/// The stored read model of one crisis: the status plus what is needed to fold
/// events into it idempotently, in any order, from several instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisProjection {
    pub status: CrisisStatus,
    /// Outcome counts per dispatch job; a redelivered report overwrites its own entry.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobTally>,
    /// Ids of the confirmation events already folded in.
    #[serde(default)]
    pub confirmation_events: BTreeSet<String>,
}

/// The outcome counts of one dispatch job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobTally {
    pub channel: Option<Channel>,
    pub provider: String,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    #[serde(default)]
    pub failed_by_reason: BTreeMap<String, u64>,
    /// For a provider's later delivery report: how many recipients counted as
    /// `sent` by their job's report it settles as delivered or failed.
    #[serde(default)]
    pub settles_sent: u64,
    /// Recipients of the job's own report flagged as possibly sent twice (their
    /// batch was in flight when an instance died and was sent again).
    #[serde(default)]
    pub possible_duplicates: u64,
    /// Times the job was delivered again after a transient failure.
    #[serde(default)]
    pub retries: u64,
    /// The crisis revision of the job (0 in tallies written before revisions were
    /// counted apart, which were all of revision 1).
    #[serde(default)]
    pub revision: u32,
    /// For an escalation notice to the duty officers: the level it belongs to.
    /// Notices are counted under their escalation, never in the channel's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_level: Option<u32>,
    /// For an escalation notice: the unconfirmed channel it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_channel: Option<Channel>,
}

/// A crisis as the duty officer sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrisisStatus {
    pub crisis_id: String,
    pub revision: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    #[serde(default)]
    pub status: AlertStatus,
    /// The Swedish banner headline, to recognise the crisis in a list.
    #[serde(default)]
    pub headline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<DateTime<Utc>>,
    /// Where the crisis is in its lifecycle.
    #[serde(default)]
    pub state: CrisisState,
    /// The current revision's channels.
    pub channels: BTreeMap<Channel, ChannelStatus>,
    /// Every revision with its own channel counts and confirmations, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// CAP severity of the current revision: it sets the confirmation deadlines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<crate::model::Severity>,
    /// When the current revision stops being shown, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The template's values in force (what the blanks were filled with), so a
    /// later message can be previewed with them. Never personal data: blanks are
    /// places, times and instructions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Set once the crisis expired: its banners were taken down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<Expiry>,
}

/// A crisis's expiry as recorded by `CrisisExpired`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Expiry {
    /// The revision whose `expires_at` passed.
    pub revision: u32,
    pub expires_at: DateTime<Utc>,
    /// When the expiry was recorded.
    pub at: DateTime<Utc>,
}

/// One escalation of an unconfirmed channel, with how its notices fared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Escalation {
    pub level: u32,
    /// When the level fell due.
    pub deadline: DateTime<Utc>,
    /// When it was raised.
    pub at: DateTime<Utc>,
    /// Notices to the duty officers handed over or delivered.
    #[serde(default)]
    pub notices_sent: u64,
    /// Notices that failed.
    #[serde(default)]
    pub notices_failed: u64,
}

/// Where a crisis is in its lifecycle: active (declared or updated) → all clear or
/// cancelled → closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrisisState {
    /// Declared, perhaps updated; updates, the all-clear and a cancellation can follow.
    #[default]
    Active,
    /// The all-clear went out; only closing is left.
    AllClear,
    /// Withdrawn as sent in error; only closing is left.
    Cancelled,
    /// Nothing more can be sent.
    Closed,
}

impl CrisisState {
    /// The state's name as written in JSON and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            CrisisState::Active => "active",
            CrisisState::AllClear => "all_clear",
            CrisisState::Cancelled => "cancelled",
            CrisisState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for CrisisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a revision was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevisionKind {
    #[default]
    Declared,
    Updated,
    AllClear,
    Cancelled,
}

/// One revision of a crisis and how its messages fared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionStatus {
    pub revision: u32,
    pub kind: RevisionKind,
    /// CAP `msgType` of the revision's messages.
    #[serde(default)]
    pub msg_type: crate::job::MsgType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Why, for a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Audiences the revision added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_audiences: Vec<String>,
    pub channels: BTreeMap<Channel, ChannelStatus>,
}

/// Progress of one channel of a crisis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelStatus {
    pub state: ChannelState,
    /// Whether the dispatch jobs are planned, so `total` is known.
    #[serde(default)]
    pub planned: bool,
    /// Recipients planned (1 for banner and intranet).
    pub total: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
    /// Recipients who may have got the message twice: their batch was in flight
    /// when a channel instance died and was sent again. They are also counted in
    /// `sent`, `delivered` or `failed`.
    #[serde(default)]
    pub possible_duplicates: u64,
    /// Dispatch jobs delivered again after a transient failure (provider outage,
    /// rate limit), summed over the channel's jobs.
    #[serde(default)]
    pub retries: u64,
    /// Failures counted by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Which provider carried how many recipients.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, u64>,
    #[serde(default)]
    pub confirmations: Vec<Confirmation>,
    /// Escalations raised while the channel was unconfirmed, lowest level first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalation>,
}

/// Where a channel stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    /// Some recipients have no outcome yet.
    #[default]
    Pending,
    /// Every recipient's message was handed over (sent or delivered).
    Delivered,
    /// Every recipient has an outcome and some failed.
    PartlyFailed,
    /// Every recipient failed.
    Failed,
}

/// An operator's confirmation of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Confirmation {
    pub revision: u32,
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
