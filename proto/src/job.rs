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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the crisis was declared.
    pub declared_at: DateTime<Utc>,
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
