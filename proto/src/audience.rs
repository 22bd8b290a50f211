//! Audiences: named groups of people reached by SMS and email.
//!
//! An audience's description lives in the KRISBUD_AUDIENCES bucket under its id;
//! its members live in KRISBUD_AUDIENCE_MEMBERS as chunks of JSON lines under
//! `<id>.<generation>.<chunk>`, so a million members never pass through one
//! message. Every import writes a new generation and then points the audience at
//! it, so a planner reading an audience never sees half an import.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Members per stored chunk: a chunk stays far below NATS's 1 MB message limit
/// even when every member has a long name.
pub const MEMBERS_PER_CHUNK: usize = 2_000;

/// Most row errors an import reports one by one; the rest are only counted.
pub const MAX_REPORTED_ERRORS: usize = 1_000;

/// A named group of recipients, as stored in the KRISBUD_AUDIENCES bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Audience {
    /// A slug, e.g. `farsta-boende`.
    pub id: String,
    pub name: String,
    /// Whether the audience may receive exercise and test messages.
    #[serde(default)]
    pub exercise: bool,
    /// Members of the current generation.
    #[serde(default)]
    pub members: u64,
    /// Members with a phone number.
    #[serde(default)]
    pub with_phone: u64,
    /// Members with an email address.
    #[serde(default)]
    pub with_email: u64,
    /// The current generation of members; 0 before the first import.
    #[serde(default)]
    pub generation: u32,
    /// Chunks of the current generation.
    #[serde(default)]
    pub chunks: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// One person in an audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    /// E.164, e.g. `+46701234567`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Preferred BCP 47 language tag; Swedish when absent or not in the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The organisation's own id for the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The line of the imported file the member came from (the header is
    /// line 1), so a duplicate can be named by its line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl Member {
    /// The member's address on `channel`, if the channel addresses people and
    /// the member has one there.
    pub fn address(&self, channel: crate::model::Channel) -> Option<&str> {
        match channel.address()? {
            crate::model::Address::Phone => self.phone.as_deref(),
            crate::model::Address::Email => self.email.as_deref(),
        }
    }
}

/// The key of one chunk of members.
pub fn chunk_key(audience: &str, generation: u32, chunk: u32) -> String {
    format!("{audience}.{generation}.{chunk:06}")
}

/// `POST /audiences`: a new, empty audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAudience {
    /// A slug: letters, digits, `-` and `_`, at most 64 characters.
    pub id: String,
    pub name: String,
    /// Whether exercises and tests may reach it.
    #[serde(default)]
    pub exercise: bool,
}

/// Names an audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AudienceId {
    pub id: String,
}

/// One piece of a CSV import, cut by the gateway at record boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportPart {
    pub audience: String,
    /// The generation being written.
    pub generation: u32,
    /// 0, 1, 2 ... in file order.
    pub part: u32,
    /// The file's header record, e.g. `phone,email,language`.
    pub header: String,
    /// The line number in the file of the first line of `csv`.
    pub first_line: u64,
    /// Whole records, without the header.
    pub csv: String,
}

/// What one part held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PartReport {
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub errors: Vec<RowError>,
}

/// The end of an import: the parts written, to be checked and made current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportCommit {
    pub audience: String,
    pub generation: u32,
    pub parts: u32,
    /// Rows read and rows rejected over all parts, for the record.
    pub rows: u64,
    pub rejected: u64,
}

/// `PUT /audiences/{id}/members`: what the import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportReport {
    pub audience: String,
    /// Data rows read (the header not counted).
    pub rows: u64,
    /// Members stored.
    pub imported: u64,
    /// Rows left out because their phone number or email address came earlier;
    /// each is listed in `errors` (with the others, up to 1,000) with the line it
    /// repeats.
    pub duplicates: u64,
    /// Rows refused; each is listed in `errors` (up to 1,000).
    pub rejected: u64,
    pub errors: Vec<RowError>,
    pub with_phone: u64,
    pub with_email: u64,
    pub generation: u32,
}

/// A refused CSV row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RowError {
    /// The line in the file, counting the header as line 1.
    pub line: u64,
    /// The column at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What is wrong, without repeating the value.
    pub reason: String,
}
