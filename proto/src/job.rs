//! Dispatch jobs: the work the coordinator hands to the channel services.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AlertStatus, CapInfo, Channel};
use crate::template::{BannerMessage, EmailMessage, IntranetMessage, SmsMessage};

/// One batch of one channel's messages for one crisis revision and language.
///
/// Jobs live on the KRISBUD_DISPATCH work queue and are removed once acknowledged;
/// they carry addresses in clear because the channel needs them, and so they are
/// never copied into events, logs or the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchJob {
    /// Deterministic: `<crisis>.r<revision>.<channel>.<language>.<batch>`; also the
    /// job's `Nats-Msg-Id`.
    pub job_id: String,
    pub crisis_id: String,
    pub revision: u32,
    pub channel: Channel,
    pub status: AlertStatus,
    pub cap: CapInfo,
    pub language: String,
    pub message: ChannelMessage,
    /// Empty for banner and intranet, which have one target each.
    #[serde(default)]
    pub recipients: Vec<Recipient>,
    /// The audiences the recipients come from, so a channel can check again that
    /// an exercise reaches only audiences marked for exercises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the crisis was declared.
    pub declared_at: DateTime<Utc>,
    /// CAP `msgType`: the first message of a crisis is an `Alert`; updates and the
    /// all-clear are `Update`; a retraction of a message sent in error is `Cancel`.
    #[serde(default)]
    pub msg_type: MsgType,
    /// The ids of the earlier messages this one updates or cancels
    /// (`<crisis>.r<revision>`), oldest first; empty for an alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// When this revision was issued (its event's time); the declaration time
    /// when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

/// CAP `msgType` of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MsgType {
    /// The first message of a crisis.
    #[default]
    Alert,
    /// Replaces an earlier message (an update, or the all-clear).
    Update,
    /// Retracts an earlier message that was sent in error.
    Cancel,
}

impl MsgType {
    /// The CAP name.
    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Alert => "Alert",
            MsgType::Update => "Update",
            MsgType::Cancel => "Cancel",
        }
    }
}

/// The id of one revision's message, as `references` name it: `<crisis>.r<revision>`.
pub fn message_id(crisis_id: &str, revision: u32) -> String {
    format!("{crisis_id}.r{revision}")
}

/// One addressee of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Recipient {
    /// Keyed hash of the address (`rcp:<hex>`): the only form that leaves the job.
    pub reference: String,
    /// E.164 phone number or email address.
    pub address: String,
}

/// The rendered message a job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum ChannelMessage {
    Sms(SmsMessage),
    Email(EmailMessage),
    Banner(BannerMessage),
    Intranet(IntranetMessage),
}
