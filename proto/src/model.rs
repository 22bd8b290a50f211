//! Small shared vocabulary: channels, roles, alert status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A delivery channel of krisbud.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Text messages through an SMS provider.
    Sms,
    /// Email through SMTP.
    Email,
    /// The public web banner.
    Banner,
    /// The staff intranet.
    Intranet,
}

impl Channel {
    /// Every channel, in the order they are shown to people.
    pub const ALL: [Channel; 4] = [
        Channel::Sms,
        Channel::Email,
        Channel::Banner,
        Channel::Intranet,
    ];

    /// The channel's name as used in subjects, URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Banner => "banner",
            Channel::Intranet => "intranet",
        }
    }

    /// Parses a channel name as used in URLs.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// How the channel addresses people: by a member's phone number or email
    /// address, or not at all (a public or shared place everyone reads).
    pub fn address(self) -> Option<Address> {
        match self {
            Channel::Sms => Some(Address::Phone),
            Channel::Email => Some(Address::Email),
            Channel::Banner | Channel::Intranet => None,
        }
    }

    /// Whether the channel addresses individual people (and so needs audiences).
    pub fn has_recipients(self) -> bool {
        self.address().is_some()
    }
}

/// What a personal channel sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// An E.164 phone number.
    Phone,
    /// An email address.
    Email,
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a user can hold; see DESIGN.md "Who uses it".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Tjänsteperson i beredskap: declares and manages crises.
    DutyOfficer,
    /// Drafts template versions.
    TemplateEditor,
    /// Approves or rejects template versions (never their own).
    TemplateApprover,
    /// Confirms that a channel's message is really out.
    Operator,
    /// Reads, exports and verifies the audit log.
    Auditor,
    /// Manages users, audiences and provider settings.
    Admin,
    /// A krisbud service acting on its own behalf.
    System,
}

impl Role {
    /// The role's name as written in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DutyOfficer => "duty_officer",
            Role::TemplateEditor => "template_editor",
            Role::TemplateApprover => "template_approver",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }
}

/// CAP `status`: whether a crisis is real or practice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AlertStatus {
    /// A real crisis.
    #[default]
    Actual,
    /// An exercise ("ÖVNING").
    Exercise,
    /// A technical test ("TEST").
    Test,
}

/// CAP `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    Extreme,
    Severe,
    Moderate,
    Minor,
    Unknown,
}

/// CAP `urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Urgency {
    Immediate,
    Expected,
    Future,
    Past,
    Unknown,
}

/// CAP `certainty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Certainty {
    Observed,
    Likely,
    Possible,
    Unlikely,
    Unknown,
}

/// CAP `category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Category {
    Geo,
    Met,
    Safety,
    Security,
    Rescue,
    Fire,
    Health,
    Env,
    Transport,
    Infra,
    #[serde(rename = "CBRNE")]
    Cbrne,
    Other,
}

/// CAP `responseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ResponseType {
    Shelter,
    Evacuate,
    Prepare,
    Execute,
    Avoid,
    Monitor,
    Assess,
    AllClear,
    None,
}

/// The CAP classification of a crisis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CapInfo {
    pub category: Category,
    pub event: String,
    pub urgency: Urgency,
    pub severity: Severity,
    pub certainty: Certainty,
    pub response_type: ResponseType,
}
